// A real OpenID provider for killswitch's single sign-on tests: oidc-provider with one
// confidential client, a few in-memory accounts, and the development login and consent forms
// (which a test submits programmatically).
//
//   node tests/oidc/provider.mjs [--port N] [--client-id ID] [--client-secret SECRET]
//                                [--redirect-uri URI] [--signing-key PEM_FILE]
//                                [--id-token-ttl SECONDS]
//
// Every option can also come from the environment: OIDC_PORT, OIDC_CLIENT_ID,
// OIDC_CLIENT_SECRET, OIDC_REDIRECT_URI, OIDC_SIGNING_KEY, OIDC_ID_TOKEN_TTL.
// Listens on 127.0.0.1 only (port 0 picks a free one) and prints one JSON line
// {"issuer": "http://127.0.0.1:<port>"} on stdout once it accepts connections.
//
// Logins accepted by the development form (any password): see ACCOUNTS below.

import { createPrivateKey, generateKeyPairSync, randomBytes } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { parseArgs } from 'node:util';

import Provider from 'oidc-provider';

const { values: args } = parseArgs({
  options: {
    port: { type: 'string' },
    'client-id': { type: 'string' },
    'client-secret': { type: 'string' },
    'redirect-uri': { type: 'string' },
    'signing-key': { type: 'string' },
    'id-token-ttl': { type: 'string' },
  },
  strict: true,
});

const env = process.env;
const port = Number(args.port ?? env.OIDC_PORT ?? 0);
const clientId = args['client-id'] ?? env.OIDC_CLIENT_ID ?? 'killswitch';
const clientSecret = args['client-secret'] ?? env.OIDC_CLIENT_SECRET ?? 'killswitch-test-secret';
const redirectUri = args['redirect-uri'] ?? env.OIDC_REDIRECT_URI ?? 'http://127.0.0.1:8080/auth/callback';
const signingKeyFile = args['signing-key'] ?? env.OIDC_SIGNING_KEY;
const idTokenTtl = Number(args['id-token-ttl'] ?? env.OIDC_ID_TOKEN_TTL ?? 600);

if (!Number.isInteger(port) || port < 0 || port > 65535) {
  throw new Error(`--port must be a port number, got ${args.port ?? env.OIDC_PORT}`);
}
if (!Number.isInteger(idTokenTtl) || idTokenTtl < 1) {
  throw new Error('--id-token-ttl must be a whole number of seconds, at least 1');
}

// The login name typed into the development form selects the account.
// Some send no `email_verified`, no `email` at all (with an e-mail-shaped subject), or only a
// `preferred_username`, as Entra does.
const ACCOUNTS = {
  'night.shift': { sub: 'a7c1e0d2-0001', email: 'night.shift@provider.example', email_verified: true },
  stranger: { sub: 'a7c1e0d2-0002', email: 'stranger@provider.example', email_verified: true },
  unverified: { sub: 'a7c1e0d2-0003', email: 'unverified@provider.example', email_verified: false },
  'no-flag': { sub: 'a7c1e0d2-0004', email: 'no.flag@provider.example' },
  'sub-only': { sub: 'sub.only@provider.example' },
  'entra-style': { sub: 'a7c1e0d2-0006', preferred_username: 'entra.style@provider.example' },
};

// The signing key: a given RSA PEM (so a test can also sign tokens this provider's JWKS
// vouches for), or a fresh one.
function signingJwk() {
  const privateKey = signingKeyFile
    ? createPrivateKey(readFileSync(signingKeyFile))
    : generateKeyPairSync('rsa', { modulusLength: 2048 }).privateKey;
  return { ...privateKey.export({ format: 'jwk' }), kid: 'test-signing-key', alg: 'RS256', use: 'sig' };
}

const server = createServer();
await new Promise((resolve, reject) => {
  server.once('error', reject);
  server.listen(port, '127.0.0.1', resolve);
});
const issuer = `http://127.0.0.1:${server.address().port}`;

const provider = new Provider(issuer, {
  clients: [
    {
      client_id: clientId,
      client_secret: clientSecret,
      redirect_uris: [redirectUri],
      grant_types: ['authorization_code'],
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
  ],
  async findAccount(_ctx, id) {
    const account = ACCOUNTS[id];
    if (!account) return undefined;
    return {
      accountId: id,
      async claims() {
        return { ...account };
      },
    };
  },
  claims: { openid: ['sub'], email: ['email', 'email_verified'], profile: ['preferred_username'] },
  scopes: ['openid', 'email', 'profile'],
  responseTypes: ['code'],
  pkce: { required: () => true },
  // Put the requested e-mail claims into the ID token too, not only behind userinfo.
  conformIdTokenClaims: false,
  features: { devInteractions: { enabled: true } },
  jwks: { keys: [signingJwk()] },
  cookies: { keys: [randomBytes(32).toString('base64url')] },
  ttl: {
    AccessToken: 600,
    AuthorizationCode: 60,
    IdToken: idTokenTtl,
    Interaction: 600,
    Session: 3600,
    Grant: 3600,
  },
  renderError(ctx, out) {
    ctx.type = 'json';
    ctx.body = out;
  },
});

server.on('request', provider.callback());
provider.on('server_error', (_ctx, err) => console.error('oidc-provider server_error:', err));

process.stdout.write(`${JSON.stringify({ issuer })}\n`);

for (const signal of ['SIGTERM', 'SIGINT']) {
  process.on(signal, () => server.close(() => process.exit(0)));
}
// Stop with the test that started us: stdin closes when the parent goes away.
process.stdin.on('end', () => process.exit(0));
process.stdin.resume();
