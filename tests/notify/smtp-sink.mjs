// A real SMTP server for killswitch's notification tests (the npm `smtp-server` package).
// Prints {"port": N} once listening, then one JSON line per message accepted:
// {"from", "to": [...], "user", "data"} with `data` the message as received.
//   node smtp-sink.mjs [--port N] [--user U --password P] [--tls starttls|implicit --key K --cert C]
// With --user, AUTH is required and checked; without, it is refused. Without --tls the server
// offers no STARTTLS (killswitch speaks plain SMTP only to loopback, with ?tls=none).
import { readFileSync } from "node:fs";
import { SMTPServer } from "smtp-server";

const args = process.argv.slice(2);
const option = (name) => {
  const i = args.indexOf(`--${name}`);
  return i >= 0 ? args[i + 1] : undefined;
};
const port = Number(option("port") ?? 0);
const user = option("user");
const password = option("password");
const tls = option("tls") ?? "none";
const plain = tls === "none";

const server = new SMTPServer({
  disabledCommands: [...(plain ? ["STARTTLS"] : []), ...(user ? [] : ["AUTH"])],
  secure: tls === "implicit",
  ...(plain ? {} : { key: readFileSync(option("key")), cert: readFileSync(option("cert")) }),
  allowInsecureAuth: true,
  authOptional: !user,
  logger: false,
  onAuth(auth, _session, callback) {
    if (auth.username === user && auth.password === password) {
      callback(null, { user: auth.username });
    } else {
      callback(new Error("Invalid username or password"));
    }
  },
  onData(stream, session, callback) {
    const chunks = [];
    stream.on("data", (chunk) => chunks.push(chunk));
    stream.on("end", () => {
      process.stdout.write(
        JSON.stringify({
          from: session.envelope.mailFrom && session.envelope.mailFrom.address,
          to: session.envelope.rcptTo.map((r) => r.address),
          user: session.user ?? null,
          secure: Boolean(session.secure),
          data: Buffer.concat(chunks).toString("utf8"),
        }) + "\n",
      );
      callback();
    });
  },
});
server.on("error", (e) => {
  process.stderr.write(`smtp-sink: ${e.message}\n`);
});
server.listen(port, "127.0.0.1", () => {
  process.stdout.write(JSON.stringify({ port: server.server.address().port }) + "\n");
});
process.stdin.on("end", () => process.exit(0));
process.stdin.resume();
