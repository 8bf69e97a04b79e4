// mtlsgate end-to-end test fixture: a REAL OAuth 2.0 authorization server (npm `oidc-provider`,
// by panva) on loopback HTTPS. Only its configuration is ours; every grant, refusal and token
// check below is oidc-provider's own behaviour. See README.md in this directory.
//
// Start:  node tests/oauth-server/server.mjs     (after `npm ci --prefix tests/oauth-server`)
//
// Environment (configuration):
//   OAUTH_PORT        TCP port to listen on, 127.0.0.1 only. Required. 0 = pick a free port
//                     (the chosen one is printed in the READY line and used in the issuer).
//   OAUTH_CERT        Path of the HTTPS server certificate chain (PEM). Required. Must be valid for
//                     IP 127.0.0.1 (subjectAltName IP:127.0.0.1).
//   OAUTH_KEY         Path of the matching private key (PEM; PKCS#8, PKCS#1 or SEC1). Required.
//   OAUTH_CLIENTS     JSON array of clients. Required. Each entry:
//                       { "client_id": "...", "client_secret": "...",
//                         "grant_types": ["client_credentials"] or
//                                        ["authorization_code", "refresh_token"],
//                         "redirect_uris": ["http://127.0.0.1:8080/api/oauth2/callback"],   (auth code only)
//                         "token_endpoint_auth_method": "client_secret_basic" (default) | "client_secret_post",
//                         ...any other oidc-provider client metadata (e.g. "scope": "api") }
//                     A public client has "token_endpoint_auth_method": "none" and no client_secret;
//                     it must use PKCE.
//                     A refresh_token is issued (for authorization_code, without any need to request
//                     offline_access) only to clients whose grant_types include "refresh_token".
//                     Secret clients may authenticate with either client_secret_basic or
//                     client_secret_post whatever they registered (oidc-provider 8 accepts both).
//                     redirect_uris are matched exactly (http://127.0.0.1:<port>/... is accepted).
//                     Invalid metadata makes the server exit 2 at start, reason on stderr.
//   OAUTH_ACCESS_TTL  Access token lifetime in seconds (both grants), i.e. `expires_in`. Default 3600.
//   OAUTH_SCOPES      Space-separated scopes the server knows besides `openid` and `offline_access`.
//                     Default "api". A requested scope not in this list is silently left out of the
//                     token (no error), so list every scope a test requests.
//   OAUTH_ACCOUNT     Account id (`sub`) auto-logged-in by the interaction. Default "test-user".
//   OAUTH_ROTATE_REFRESH  "1" = rotate the refresh token on every refresh (the old one becomes
//                     consumed; presenting it again is refused AND revokes the whole grant). Default:
//                     oidc-provider's default, which for a confidential client does not rotate within
//                     a test's lifetime: the refresh response repeats the same refresh_token.
//   OAUTH_STRICT_COOKIES  "1" = disable the cookie shim (see below): the authorize redirect chain then
//                     needs a cookie store, exactly like a browser. Default: shim on.
//   OAUTH_DEBUG       "1" = log every request (method, path, status) to stderr.
//
// Output: exactly one line on stdout, `READY <port>`, once listening. Everything else (oidc-provider
// notices, errors) goes to stderr.
//
// Endpoints (issuer https://127.0.0.1:<port>):
//   GET  /.well-known/openid-configuration   discovery
//   GET  /auth                               authorization endpoint
//   GET  /interaction/:uid                   auto-login + auto-consent (ours), 303 -> /auth/:uid
//   GET  /auth/:uid                          oidc-provider's resume endpoint, 303 -> redirect_uri?code=..&state=..&iss=..
//   POST /token                              token endpoint (client_credentials, authorization_code, refresh_token)
//   POST /token/introspection                RFC 7662 introspection (any registered client may introspect)
//   POST /token/revocation                   RFC 7009 revocation
//   GET  /jwks                               signing keys (ephemeral, generated at start)
//   GET  /test/valid?token=<access token>    ours: {"active": true|false, ...} without client auth
//
// Cookie shim: oidc-provider ties /auth -> /interaction/:uid -> /auth/:uid together with two
// cookies (`_interaction`, `_interaction_resume`). Our /interaction/:uid handler finds the
// interaction by the uid in its path, and for a GET /auth/:uid without `_interaction_resume` we
// add that cookie (value = the uid from the path) before oidc-provider sees the request. So a client
// without a cookie store can follow the chain. A client WITH a cookie store also works (then the
// `_session` cookie makes later authorizations skip the interaction: 1 hop instead of 3).

import fs from 'node:fs';
import https from 'node:https';
import tls from 'node:tls';
import crypto from 'node:crypto';
import { URL } from 'node:url';

import Provider from 'oidc-provider';

// oidc-provider prints NOTICEs with console.info (stdout); keep stdout for the READY line only.
console.info = (...args) => console.error(...args);
console.log = (...args) => console.error(...args);

function fail(msg) {
  process.stderr.write(`oauth-server: ${msg}\n`);
  process.exit(2);
}

function env(name, dflt) {
  const v = process.env[name];
  if (v === undefined || v === '') {
    if (dflt === undefined) fail(`environment variable ${name} is required`);
    return dflt;
  }
  return v;
}

const port = Number.parseInt(env('OAUTH_PORT'), 10);
if (!Number.isInteger(port) || port < 0 || port > 65535) fail('OAUTH_PORT must be a port number');
function readPem(name) {
  const path = env(name);
  try {
    return fs.readFileSync(path);
  } catch (e) {
    return fail(`${name}: cannot read ${path}: ${e.message}`);
  }
}
const cert = readPem('OAUTH_CERT');
const key = readPem('OAUTH_KEY');
const accessTtl = Number.parseInt(env('OAUTH_ACCESS_TTL', '3600'), 10);
if (!Number.isInteger(accessTtl) || accessTtl <= 0) fail('OAUTH_ACCESS_TTL must be a positive integer');
const extraScopes = env('OAUTH_SCOPES', 'api').split(/\s+/).filter(Boolean);
const accountId = env('OAUTH_ACCOUNT', 'test-user');
const rotateRefresh = env('OAUTH_ROTATE_REFRESH', '0') === '1';
const strictCookies = env('OAUTH_STRICT_COOKIES', '0') === '1';
const debug = env('OAUTH_DEBUG', '0') === '1';

let rawClients;
try {
  rawClients = JSON.parse(env('OAUTH_CLIENTS'));
} catch (e) {
  fail(`OAUTH_CLIENTS is not valid JSON: ${e.message}`);
}
if (!Array.isArray(rawClients)) fail('OAUTH_CLIENTS must be a JSON array');

const clients = rawClients.map((c) => {
  if (!c || typeof c.client_id !== 'string') fail('every OAUTH_CLIENTS entry needs a string client_id');
  if (c.token_endpoint_auth_method !== 'none' && typeof c.client_secret !== 'string') {
    fail(`client ${c.client_id}: client_secret is required (unless token_endpoint_auth_method is "none")`);
  }
  const grantTypes = c.grant_types ?? ['authorization_code'];
  const out = { ...c, grant_types: grantTypes };
  if (!grantTypes.includes('authorization_code') && !grantTypes.includes('implicit')) {
    // A client without a front-channel grant must register no response types / redirect URIs.
    out.response_types = c.response_types ?? [];
    out.redirect_uris = c.redirect_uris ?? [];
  } else {
    out.response_types = c.response_types ?? ['code'];
    out.redirect_uris = c.redirect_uris ?? [];
  }
  return out;
});

// Ephemeral signing key (ID tokens, only if `openid` is requested; access tokens are opaque).
const { privateKey } = crypto.generateKeyPairSync('ec', { namedCurve: 'P-256' });
const signingJwk = { ...privateKey.export({ format: 'jwk' }), kid: 'test', use: 'sig', alg: 'ES256' };

const ttlFn = () => accessTtl;

function buildProvider(issuer) {
  const configuration = {
    clients,
    jwks: { keys: [signingJwk] },
    enabledJWA: { idTokenSigningAlgValues: ['ES256'] },
    clientDefaults: {
      grant_types: ['authorization_code'],
      id_token_signed_response_alg: 'ES256',
      response_types: ['code'],
      token_endpoint_auth_method: 'client_secret_basic',
    },
    scopes: ['openid', 'offline_access', ...extraScopes],
    claims: { openid: ['sub'] },
    findAccount: async (_ctx, sub) => ({ accountId: sub, claims: async () => ({ sub }) }),
    features: {
      devInteractions: { enabled: false },
      clientCredentials: { enabled: true },
      introspection: { enabled: true, allowedPolicy: async () => true },
      revocation: { enabled: true },
      userinfo: { enabled: true },
      rpInitiatedLogout: { enabled: false },
      resourceIndicators: {
        enabled: true,
        // No `resource` parameter -> no resource indicator -> opaque token with the requested scopes.
        defaultResource: async () => undefined,
        useGrantedResource: async () => true,
        // A `resource` parameter, if a test sends one, is accepted for any URI.
        getResourceServerInfo: async () => ({
          scope: extraScopes.join(' '),
          accessTokenTTL: accessTtl,
          accessTokenFormat: 'opaque',
        }),
      },
    },
    // PKCE (S256) is optional for confidential clients and mandatory for public ones
    // (token_endpoint_auth_method "none"). A code issued WITH a challenge always needs the verifier.
    pkce: { required: (_ctx, client) => client.clientAuthMethod === 'none' },
    // Refresh tokens without a human having to request `offline_access`.
    issueRefreshToken: async (_ctx, client) => client.grantTypeAllowed('refresh_token'),
    expiresWithSession: async () => false,
    ...(rotateRefresh ? { rotateRefreshToken: true } : {}),
    ttl: {
      AccessToken: ttlFn,
      ClientCredentials: ttlFn,
      AuthorizationCode: 60,
      IdToken: 3600,
      RefreshToken: 24 * 3600,
      Interaction: 600,
      Session: 24 * 3600,
      Grant: 24 * 3600,
    },
    // Errors on the authorization endpoint as JSON (no HTML to scrape).
    renderError: async (ctx, out) => {
      ctx.type = 'application/json';
      ctx.body = out;
    },
  };
  const provider = new Provider(issuer, configuration);
  for (const ev of ['server_error', 'grant.error', 'authorization.error', 'introspection.error',
    'revocation.error', 'resume.error', 'check_session_origin.error']) {
    provider.on(ev, (_ctx, err) => {
      const detail = [err?.error_description, err?.error_detail].filter(Boolean).join(': ');
      process.stderr.write(`oauth-server: ${ev}: ${err?.name} ${err?.message}${detail ? ` (${detail})` : ''}\n`);
    });
  }
  return provider;
}

// Auto-login the fixed account and auto-grant every requested scope (and resource, if any).
async function autoInteraction(provider, uid, req, res) {
  const interaction = await provider.Interaction.find(uid);
  if (!interaction) {
    sendJson(res, 400, { error: 'invalid_request', error_description: 'interaction session not found or expired' });
    return;
  }
  const { params } = interaction;
  let grant;
  if (interaction.grantId) grant = await provider.Grant.find(interaction.grantId);
  if (!grant) grant = new provider.Grant({ accountId, clientId: params.client_id });
  if (params.scope) grant.addOIDCScope(params.scope);
  if (params.resource) {
    const resources = Array.isArray(params.resource) ? params.resource : [params.resource];
    for (const r of resources) grant.addResourceScope(r, params.scope || extraScopes.join(' '));
  }
  const grantId = await grant.save();
  interaction.result = {
    ...interaction.lastSubmission,
    login: { accountId },
    consent: { grantId },
  };
  await interaction.save(interaction.exp - Math.floor(Date.now() / 1000));
  res.statusCode = 303;
  res.setHeader('Location', interaction.returnTo);
  res.setHeader('Content-Length', '0');
  res.end();
}

async function tokenValidity(provider, token) {
  if (!token) return { active: false };
  for (const Model of [provider.AccessToken, provider.ClientCredentials]) {
    const t = await Model.find(token); // eslint-disable-line no-await-in-loop
    if (t && !t.isExpired) {
      return {
        active: true,
        kind: t.kind,
        client_id: t.clientId,
        scope: t.scope ?? null,
        sub: t.accountId ?? null,
        exp: t.exp,
      };
    }
  }
  return { active: false };
}

function sendJson(res, status, body) {
  const data = JSON.stringify(body);
  res.statusCode = status;
  res.setHeader('Content-Type', 'application/json');
  res.setHeader('Content-Length', Buffer.byteLength(data));
  res.end(data);
}

let provider;
let callback;

let tlsContext;
try {
  tlsContext = { cert, key };
  // Fails here (not at the first handshake) on unreadable PEM or a key not matching the certificate.
  tls.createSecureContext(tlsContext);
} catch (e) {
  fail(`OAUTH_CERT/OAUTH_KEY: ${e.message}`);
}

const server = https.createServer(tlsContext, (req, res) => {
  if (debug) {
    const started = Date.now();
    res.on('finish', () => process.stderr.write(`oauth-server: ${req.method} ${req.url} -> ${res.statusCode} (${Date.now() - started} ms)\n`));
  }
  if (!callback) {
    sendJson(res, 503, { error: 'temporarily_unavailable', error_description: 'starting' });
    return;
  }
  const url = new URL(req.url, 'https://127.0.0.1');
  const interactionMatch = /^\/interaction\/([^/]+)$/.exec(url.pathname);
  if (interactionMatch && req.method === 'GET') {
    autoInteraction(provider, interactionMatch[1], req, res).catch((err) => {
      process.stderr.write(`oauth-server: interaction: ${err.stack}\n`);
      sendJson(res, 500, { error: 'server_error', error_description: String(err.message) });
    });
    return;
  }
  if (url.pathname === '/test/valid' && req.method === 'GET') {
    tokenValidity(provider, url.searchParams.get('token')).then(
      (body) => sendJson(res, 200, body),
      (err) => sendJson(res, 500, { error: String(err.message) }),
    );
    return;
  }
  const resumeMatch = /^\/auth\/([^/]+)$/.exec(url.pathname);
  if (resumeMatch && !strictCookies && req.method === 'GET') {
    const existing = req.headers.cookie ?? '';
    if (!/(?:^|;\s*)_interaction_resume=/.test(existing)) {
      const add = `_interaction_resume=${resumeMatch[1]}`;
      req.headers.cookie = existing ? `${existing}; ${add}` : add;
    }
  }
  callback(req, res);
});

server.on('error', (err) => fail(`listen: ${err.message}`));
server.listen(port, '127.0.0.1', () => {
  const actual = server.address().port;
  provider = buildProvider(`https://127.0.0.1:${actual}`);
  // Static clients are only validated when first used: validate them now so a bad OAUTH_CLIENTS
  // entry fails at start (exit 2, reason on stderr) instead of as invalid_client_metadata later.
  Promise.all(clients.map(async (c) => {
    try {
      await provider.Client.find(c.client_id);
    } catch (err) {
      throw new Error(`client ${c.client_id}: ${err.error_description || err.message}`);
    }
  })).then(() => {
    callback = provider.callback();
    process.stdout.write(`READY ${actual}\n`);
  }, (err) => fail(`OAUTH_CLIENTS: ${err.message}`));
});

for (const sig of ['SIGINT', 'SIGTERM']) {
  process.on(sig, () => {
    server.close();
    process.exit(0);
  });
}
