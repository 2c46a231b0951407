//! `fake-entra [--listen 127.0.0.1:9000]`: a fake Entra ID + Graph for local killswitch demos.
//!
//! Prints the environment killswitch needs to talk to it, then serves until Ctrl-C.

use std::net::SocketAddr;
use std::process::ExitCode;

use fake_entra::FakeEntra;

const USAGE: &str = "usage: fake-entra [--listen ADDR]   (default 127.0.0.1:9000)";

fn parse_args() -> Result<SocketAddr, String> {
    let mut listen = "127.0.0.1:9000".to_owned();
    let mut args = std::env::args().skip(1);
    while let Some(arg) = args.next() {
        match arg.as_str() {
            "-h" | "--help" => return Err(String::new()),
            "--listen" => listen = args.next().ok_or("--listen needs an address")?,
            a => match a.strip_prefix("--listen=") {
                Some(addr) => listen = addr.to_owned(),
                None => return Err(format!("unknown argument '{a}'")),
            },
        }
    }
    listen
        .parse()
        .map_err(|e| format!("bad --listen address '{listen}': {e}"))
}

#[tokio::main]
async fn main() -> ExitCode {
    let addr = match parse_args() {
        Ok(a) => a,
        Err(e) => {
            if !e.is_empty() {
                eprintln!("fake-entra: {e}");
            }
            eprintln!("{USAGE}");
            return if e.is_empty() {
                ExitCode::SUCCESS
            } else {
                ExitCode::from(2)
            };
        }
    };
    let fake = match FakeEntra::start_on(addr).await {
        Ok(f) => f,
        Err(e) => {
            eprintln!("fake-entra: cannot listen on {addr}: {e}");
            return ExitCode::FAILURE;
        }
    };
    let seed = fake.seed_demo();
    let base = fake.base_url();
    println!("KILLSWITCH_ENTRA__AUTHORITY_URL={base}");
    println!("KILLSWITCH_ENTRA__GRAPH_URL={base}");
    println!("KILLSWITCH_ENTRA__CLIENT_ID={}", seed.client_id);
    println!("KILLSWITCH_ENTRA__CLIENT_SECRET={}", seed.client_secret);
    println!("# tenant {} ({})", seed.tenant_id, seed.domain);
    for upn in ["alice", "bob", "carol.admin", "breakglass"].map(|u| format!("{u}@{}", seed.domain))
    {
        if let Some(u) = fake.user(seed.tenant_id, &upn) {
            let mut notes = vec![
                if u.account_enabled {
                    "enabled"
                } else {
                    "disabled"
                }
                .to_owned(),
            ];
            match &u.on_premises_security_identifier {
                Some(sid) => notes.push(format!("synced, SID {sid}")),
                None => notes.push("cloud-only".to_owned()),
            }
            if u.privileged {
                notes.push("privileged (PATCH answers 403)".to_owned());
            }
            println!(
                "# user {} id={} {}",
                u.user_principal_name,
                u.id,
                notes.join(", ")
            );
        }
    }
    println!("# directory state: curl {base}/_fake/users");
    if let Err(e) = tokio::signal::ctrl_c().await {
        eprintln!("fake-entra: cannot wait for Ctrl-C ({e}); exiting");
        return ExitCode::FAILURE;
    }
    ExitCode::SUCCESS
}
