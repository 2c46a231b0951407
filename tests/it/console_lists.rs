//! The console's lists with many rows: pages by position that neither skip nor repeat rows,
//! the actions page's filters and scope, an account's history, and the pending count per
//! customer. Rows are written straight into the tables with chosen times (equal ones included);
//! what is tested is how they are read.

use std::collections::BTreeMap;

use killswitch::auth::Role;
use killswitch::auth::tokens;
use killswitch::customers::Policy;
use killswitch::domain::CustomerSlug;
use killswitch::domain::cursor::ListCursor;
use killswitch::store::{ActionFilter, SessionRecord};
use killswitch::time::Timestamp;
use reqwest::StatusCode;
use reqwest::header::CONTENT_TYPE;
use uuid::Uuid;

use crate::common::entra::{ALICE, BOB, TwoTenants, two_tenants};
use crate::common::{TestApp, TestDb};

/// A stored action as the lists read it back.
struct Seeded {
    id: Uuid,
    customer: &'static str,
    account: String,
    target_id: Option<String>,
    operation: &'static str,
    state: &'static str,
    /// Minutes after 2026-11-01 03:00 UTC.
    minute: u32,
}

impl Seeded {
    fn new(n: u128, customer: &'static str, account: &str, minute: u32) -> Seeded {
        Seeded {
            id: Uuid::from_u128(0xAC00_0000 + n),
            customer,
            account: account.to_owned(),
            target_id: None,
            operation: "disable",
            state: "succeeded",
            minute,
        }
    }

    fn time(&self) -> String {
        time(self.minute)
    }
}

fn time(minute: u32) -> String {
    format!(
        "2026-11-01T{:02}:{:02}:00.000000Z",
        3 + minute / 60,
        minute % 60
    )
}

async fn insert_actions(db: &TestDb, actions: &[Seeded]) {
    let mut raw = db.raw().await;
    for a in actions {
        let target = a
            .target_id
            .as_ref()
            .map_or("NULL".to_owned(), |t| format!("'{t}'"));
        let sql = format!(
            "INSERT INTO actions (id, customer, operation, account, target_id, state, reason, revoke_sessions, \
             request_hash, actor, requested_seq, outcome_seq, created_at, lease_until, finished_at, duration_ms) \
             VALUES ('{}', '{}', '{}', '{}', {target}, '{}', 'phished', FALSE, 'h', '{{\"type\":\"service\"}}', \
             1, 2, '{t}', '{t}', '{t}', 0)",
            a.id,
            a.customer,
            a.operation,
            a.account.replace('\'', "''"),
            a.state,
            t = a.time(),
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut raw)
            .await
            .unwrap();
    }
}

async fn insert_detections(db: &TestDb, customer: &str, state: &str, count: u32) {
    let mut raw = db.raw().await;
    for n in 0..count {
        let sql = format!(
            "INSERT INTO detections (id, customer, composite_id, severity, assurance, state, received_at) \
             VALUES ('{}', '{customer}', '{customer}-{state}-{n}', 'high', 'signed', '{state}', '{}')",
            Uuid::new_v4(),
            time(n % 7),
        );
        sqlx::query(sqlx::AssertSqlSafe(sql))
            .execute(&mut raw)
            .await
            .unwrap();
    }
}

/// The newest-first order every list promises: time, then id, both descending.
fn newest_first(actions: &[Seeded]) -> Vec<Uuid> {
    let mut order: Vec<(String, Uuid)> = actions.iter().map(|a| (a.time(), a.id)).collect();
    order.sort_unstable_by(|a, b| b.cmp(a));
    order.into_iter().map(|(_, id)| id).collect()
}

/// A browser signed in to the console as a new analyst with `role` over `scope`: the session
/// is written to the store as a sign-in would, and its cookie sent with every request.
struct Browser {
    client: reqwest::Client,
    cookie: String,
    base: String,
}

impl Browser {
    async fn signed_in(app: &TestApp, email: &str, role: Role, scope: &str) -> Browser {
        let analyst = app.enroll(email, role, scope).await;
        let id = Uuid::new_v4().simple().to_string();
        let now = Timestamp::now();
        let session = SessionRecord {
            id_hash: tokens::hash(&id),
            analyst_id: analyst.id.to_string(),
            csrf_token: Uuid::new_v4().simple().to_string(),
            created_at: now.to_string(),
            expires_at: now.after(std::time::Duration::from_secs(3600)).to_string(),
            auth_method: SessionRecord::method_text(killswitch::audit::event::AuthMethod::ApiToken)
                .to_owned(),
        };
        app.store.create_session(&session).await.unwrap();
        Browser {
            client: reqwest::Client::builder()
                .redirect(reqwest::redirect::Policy::none())
                .build()
                .unwrap(),
            cookie: format!("ks_session={id}"),
            base: app.base.clone(),
        }
    }

    async fn get(&self, path: &str) -> (StatusCode, String) {
        let answer = self
            .client
            .get(format!("{}{path}", self.base))
            .header("cookie", &self.cookie)
            .send()
            .await
            .unwrap();
        let status = answer.status();
        assert_eq!(answer.headers()[CONTENT_TYPE], "text/html; charset=utf-8");
        (status, answer.text().await.unwrap())
    }
}

/// The ids of the actions a page lists, in its order (each row links to its action).
fn listed(html: &str) -> Vec<Uuid> {
    html.split(r#"<a href="/actions/"#)
        .skip(1)
        .filter_map(|rest| rest.split('"').next())
        .filter_map(|id| Uuid::parse_str(id).ok())
        .collect()
}

/// The target of the link labelled `label`, unescaped as a browser would.
fn link(html: &str, label: &str) -> Option<String> {
    let end = html.find(&format!(r#"">{label}</a>"#))?;
    let start = html[..end].rfind(r#"href=""#)? + r#"href=""#.len();
    Some(html[start..end].replace("&amp;", "&").replace("&#61;", "="))
}

/// 130 actions over two customers, most sharing their minute with six others, so page
/// boundaries fall between rows of equal time.
fn crowded() -> Vec<Seeded> {
    (0..130)
        .map(|n| {
            let customer = if n % 3 == 0 { "fabrikam" } else { "contoso" };
            let mut action = Seeded::new(
                n,
                customer,
                &format!("user{}@{customer}.example", n % 5),
                (n / 7) as u32,
            );
            action.operation = if n % 2 == 0 { "disable" } else { "enable" };
            action.state = ["succeeded", "failed", "noop", "denied"][(n % 4) as usize];
            action
        })
        .collect()
}

async fn crowded_app() -> (TwoTenants, Vec<Seeded>) {
    let tenants = two_tenants(&[], Policy::default()).await;
    let actions = crowded();
    insert_actions(&tenants.app.db, &actions).await;
    (tenants, actions)
}

#[tokio::test]
async fn pages_of_equal_times_neither_skip_nor_repeat_an_action_in_the_store() {
    let (tenants, actions) = crowded_app().await;
    let store = &tenants.app.store;
    let mut seen = Vec::new();
    let mut before = None;
    loop {
        let filter = ActionFilter {
            before,
            limit: 3,
            ..ActionFilter::default()
        };
        let page = store.actions(&filter).await.unwrap();
        let Some(last) = page.last() else { break };
        before = Some(ListCursor::new(last.created_at, last.id));
        seen.extend(page.iter().map(|a| a.id));
    }
    assert_eq!(seen, newest_first(&actions));
}

#[tokio::test]
async fn the_actions_page_walks_every_action_newest_first_fifty_at_a_time() {
    let (tenants, actions) = crowded_app().await;
    let browser =
        Browser::signed_in(&tenants.app, "lead@provider.example", Role::Lead, "all").await;
    let (status, mut html) = browser.get("/actions").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        link(&html, "Newest").is_none(),
        "the first page is the newest"
    );
    let mut pages = vec![listed(&html)];
    while let Some(older) = link(&html, "Older") {
        let (status, next) = browser.get(&older).await;
        assert_eq!(status, StatusCode::OK, "{older}");
        assert_eq!(link(&next, "Newest").as_deref(), Some("/actions"));
        pages.push(listed(&next));
        html = next;
    }
    assert_eq!(pages.iter().map(Vec::len).collect::<Vec<_>>(), [50, 50, 30]);
    assert_eq!(pages.concat(), newest_first(&actions));
}

#[tokio::test]
async fn the_actions_page_filters_by_customer_outcome_operation_and_account_across_pages() {
    let (tenants, actions) = crowded_app().await;
    let browser =
        Browser::signed_in(&tenants.app, "lead@provider.example", Role::Lead, "all").await;
    let expect = |keep: &dyn Fn(&Seeded) -> bool| {
        let kept: Vec<Seeded> = crowded().into_iter().filter(|a| keep(a)).collect();
        newest_first(&kept)
    };
    let cases: [(&str, Vec<Uuid>); 4] = [
        ("customer=fabrikam", expect(&|a| a.customer == "fabrikam")),
        (
            "state=failed&operation=enable",
            expect(&|a| a.state == "failed" && a.operation == "enable"),
        ),
        (
            "account=USER3%40Contoso.example",
            expect(&|a| a.account == "user3@contoso.example"),
        ),
        (
            "customer=contoso&operation=disable",
            expect(&|a| a.customer == "contoso" && a.operation == "disable"),
        ),
    ];
    for (query, wanted) in cases {
        assert!(
            !wanted.is_empty() && wanted.len() < actions.len(),
            "{query}"
        );
        let (status, mut html) = browser.get(&format!("/actions?{query}")).await;
        assert_eq!(status, StatusCode::OK, "{query}");
        let mut got = listed(&html);
        while let Some(older) = link(&html, "Older") {
            assert!(older.contains(query), "{older} keeps {query}");
            html = browser.get(&older).await.1;
            got.extend(listed(&html));
        }
        assert_eq!(got, wanted, "{query}");
    }
    let (_, html) = browser.get("/actions?customer=fabrikam&state=denied").await;
    assert!(
        html.contains(r#"<option value="fabrikam" selected>"#),
        "{html}"
    );
    assert!(
        html.contains(r#"<option value="denied" selected>"#),
        "{html}"
    );
    assert!(html.contains(r#"<label for="account">"#), "{html}");
    let (status, html) = browser
        .get("/actions?account=%3Cscript%3Ex%3C%2Fscript%3E")
        .await;
    assert_eq!(status, StatusCode::OK);
    assert!(html.contains("No action matches these filters."), "{html}");
    assert!(
        !html.contains("<script>x"),
        "the account is escaped: {html}"
    );
}

#[tokio::test]
async fn an_analyst_of_one_customer_lists_only_its_actions_and_another_customer_is_absent() {
    let (tenants, actions) = crowded_app().await;
    let browser = Browser::signed_in(
        &tenants.app,
        "analyst@provider.example",
        Role::Analyst,
        "contoso",
    )
    .await;
    let contoso: Vec<Seeded> = crowded()
        .into_iter()
        .filter(|a| a.customer == "contoso")
        .collect();
    let mut html = browser.get("/actions").await.1;
    let mut got = listed(&html);
    while let Some(older) = link(&html, "Older") {
        html = browser.get(&older).await.1;
        got.extend(listed(&html));
    }
    assert_eq!(got, newest_first(&contoso));
    assert!(got.len() < actions.len());
    assert!(
        !html.contains(r#"value="fabrikam""#),
        "only its customers to choose: {html}"
    );
    for asked in ["fabrikam", "nosuchcustomer"] {
        let (status, html) = browser.get(&format!("/actions?customer={asked}")).await;
        assert_eq!(status, StatusCode::NOT_FOUND, "{asked}");
        assert!(!html.contains("/actions/"), "{html}");
    }
    let all = Browser::signed_in(&tenants.app, "lead@provider.example", Role::Lead, "all").await;
    assert_eq!(
        all.get("/actions?customer=nosuchcustomer").await.0,
        StatusCode::NOT_FOUND
    );
}

#[tokio::test]
async fn bad_positions_and_filters_are_answered_with_a_plain_page_and_a_role_without_actions_is_refused()
 {
    let (tenants, _) = crowded_app().await;
    let browser =
        Browser::signed_in(&tenants.app, "lead@provider.example", Role::Lead, "all").await;
    for (query, words) in [
        ("before=bm90LWEtY3Vyc29y", "not one killswitch wrote"),
        ("before=%00%FF", "not one killswitch wrote"),
        ("state=finished", "is not an action state"),
        ("operation=delete", "is not disable or enable"),
        ("customer=Not_A_Slug", "is not a customer slug"),
    ] {
        let (status, html) = browser.get(&format!("/actions?{query}")).await;
        assert_eq!(status, StatusCode::UNPROCESSABLE_ENTITY, "{query}: {html}");
        assert!(html.contains(words), "{query}: {html}");
    }
    let admin =
        Browser::signed_in(&tenants.app, "admin@provider.example", Role::Admin, "all").await;
    let (status, html) = admin.get("/actions").await;
    assert_eq!(status, StatusCode::FORBIDDEN, "{html}");
    assert!(!html.contains("/actions/"), "{html}");
}

#[tokio::test]
async fn an_account_history_finds_its_actions_by_the_upn_in_any_case_and_by_object_id() {
    let tenants = two_tenants(&[], Policy::default()).await;
    let alice = "alice@contoso.onmicrosoft.com";
    let mut by_upn = Seeded::new(1, "contoso", "Alice@Contoso.onmicrosoft.com", 1);
    by_upn.target_id = Some(ALICE.to_string());
    let by_id = Seeded::new(2, "contoso", &ALICE.to_string(), 2);
    let mut typed_upper = Seeded::new(3, "contoso", "ALICE@CONTOSO.ONMICROSOFT.COM", 3);
    typed_upper.state = "failed";
    let bob = Seeded::new(4, "contoso", "bob@contoso.onmicrosoft.com", 4);
    let other_customer = Seeded::new(5, "fabrikam", alice, 5);
    let mut renamed = Seeded::new(6, "contoso", "alice.old@contoso.onmicrosoft.com", 6);
    renamed.target_id = Some(ALICE.to_string());
    let all = [by_upn, by_id, typed_upper, bob, other_customer, renamed];
    insert_actions(&tenants.app.db, &all).await;
    // Newest first: the renamed one, the one typed in capitals, by id, by UPN.
    let hers = [all[5].id, all[2].id, all[1].id, all[0].id];

    let browser = Browser::signed_in(
        &tenants.app,
        "analyst@provider.example",
        Role::Analyst,
        "contoso",
    )
    .await;
    for asked in ["ALICE@contoso.onmicrosoft.com", &ALICE.to_string()] {
        let (status, html) = browser
            .get(&format!("/customers/contoso/accounts/{asked}"))
            .await;
        assert_eq!(status, StatusCode::OK, "{asked}: {html}");
        assert_eq!(listed(&html), hers, "{asked}");
    }

    // Without Entra's answer (the store alone), the names given are all there is to match.
    let filter = |names: &[&str]| ActionFilter {
        customers: Some(vec!["contoso".parse::<CustomerSlug>().unwrap()]),
        accounts: Some(names.iter().map(|n| (*n).to_owned()).collect()),
        limit: 50,
        ..ActionFilter::default()
    };
    let ids = |records: Vec<killswitch::remediation::action::ActionRecord>| {
        records.into_iter().map(|a| a.id).collect::<Vec<_>>()
    };
    let store = &tenants.app.store;
    let upn_only = store
        .actions(&filter(&["aLiCe@CONTOSO.onmicrosoft.com"]))
        .await
        .unwrap();
    assert_eq!(ids(upn_only), [all[2].id, all[0].id]);
    let id_only = store
        .actions(&filter(&[&ALICE.to_string().to_uppercase()]))
        .await
        .unwrap();
    assert_eq!(ids(id_only), [all[5].id, all[1].id, all[0].id]);
    assert!(store.actions(&filter(&[])).await.unwrap().is_empty());
    assert!(
        store
            .actions(&filter(&[&BOB.to_string()]))
            .await
            .unwrap()
            .is_empty()
    );
}

#[tokio::test]
async fn the_home_cards_count_every_pending_detection_of_each_customer() {
    let tenants = two_tenants(&[], Policy::default()).await;
    let db = &tenants.app.db;
    insert_detections(db, "contoso", "pending", 64).await;
    insert_detections(db, "contoso", "dismissed", 5).await;
    insert_detections(db, "fabrikam", "pending", 3).await;
    insert_detections(db, "fabrikam", "approved", 2).await;

    let store = &tenants.app.store;
    let counts = store.pending_by_customer(None).await.unwrap();
    let expected: BTreeMap<CustomerSlug, u64> = [
        ("contoso".parse().unwrap(), 64),
        ("fabrikam".parse().unwrap(), 3),
    ]
    .into();
    assert_eq!(counts, expected);
    let fabrikam: [CustomerSlug; 1] = ["fabrikam".parse().unwrap()];
    let scoped = store.pending_by_customer(Some(&fabrikam)).await.unwrap();
    assert_eq!(
        scoped.into_iter().collect::<Vec<_>>(),
        [(fabrikam[0].clone(), 3)]
    );
    assert!(
        store
            .pending_by_customer(Some(&[]))
            .await
            .unwrap()
            .is_empty()
    );

    let lead = Browser::signed_in(&tenants.app, "lead@provider.example", Role::Lead, "all").await;
    let (status, html) = lead.get("/").await;
    assert_eq!(status, StatusCode::OK);
    assert!(
        html.contains("64 pending detections"),
        "more than the 50 listed: {html}"
    );
    assert!(html.contains("3 pending detections"), "{html}");
    assert!(html.contains(r#"href="/actions""#), "{html}");
    let scoped = Browser::signed_in(
        &tenants.app,
        "analyst@provider.example",
        Role::Analyst,
        "fabrikam",
    )
    .await;
    let html = scoped.get("/").await.1;
    assert!(html.contains("3 pending detections"), "{html}");
    assert!(!html.contains("64 pending"), "{html}");
}
