// A real OpenID provider for phigate's tests and demo (npm oidc-provider, loopback only).
// Issues RS256 JWT access tokens (typ at+jwt) by the client-credentials grant, with a groups claim.
// People sign in to the reviewer console as `phigate-console` (a public client: authorization code
// with PKCE, redirect to any loopback port) through oidc-provider's development login form, where
// the login name is one of the ids below (the password is not checked): their token carries that
// id as `sub` and its groups, name and email.
//   IDP_PORT      port to listen on (default 9412)
//   IDP_JWKS      path of a private JWKS file ({"keys": [...]}); first key signs. Default: dev key.
//   IDP_CLIENTS   path of a JSON file {client_id: {groups: [...], name?, email?, purpose?, ttl?, audience?}}
import fs from 'node:fs';
import Provider from 'oidc-provider';

const port = Number(process.env.IDP_PORT || 9412);
const issuer = `http://127.0.0.1:${port}`;
const defaults = {
  'agent-1': { groups: ['agents'], name: 'Analytics Agent 1' },
  'clin-1': { groups: ['clinicians'], name: 'Dr. Clinician One', email: 'clin-1@example.org', purpose: 'treatment' },
  'approver-1': { groups: ['privacy-office'], name: 'Privacy Officer One', email: 'po-1@example.org' },
  'approver-2': { groups: ['privacy-office'], name: 'Privacy Officer Two', email: 'po-2@example.org' },
  'admin-1': { groups: ['db-admins'], name: 'DB Admin' },
  'er-1': { groups: ['clinicians', 'emergency'], name: 'ER Physician', purpose: 'treatment' },
  'nobody-1': { groups: [] },
  'short-1': { groups: ['agents'], ttl: 2 },
  'other-aud-1': { groups: ['agents'], audience: 'not-phigate' },
};
const spec = process.env.IDP_CLIENTS ? JSON.parse(fs.readFileSync(process.env.IDP_CLIENTS, 'utf8')) : defaults;
const CONSOLE = 'phigate-console';
const clients = Object.keys(spec).map((id) => ({
  client_id: id, client_secret: `${id}-secret`,
  grant_types: ['client_credentials'], redirect_uris: [], response_types: [],
}));
// RFC 8252 7.3: a native client's loopback redirect URI matches any port (each test's console has its own).
clients.push({
  client_id: CONSOLE, application_type: 'native', token_endpoint_auth_method: 'none',
  grant_types: ['authorization_code'], response_types: ['code'],
  redirect_uris: ['http://127.0.0.1/', 'http://localhost/'],
});
const loopbackOrigin = /^http:\/\/(127\.0\.0\.1|localhost)(:\d+)?$/;
const config = {
  clients,
  // The console page (on its own loopback port) calls the token endpoint from the browser.
  clientBasedCORS: (ctx, origin, client) => client.clientAuthMethod === 'none' && loopbackOrigin.test(origin),
  // People who sign in: any id in the spec; the token's claims come from extraTokenClaims.
  findAccount: (ctx, id) => (spec[id] ? { accountId: id, claims: () => ({ sub: id }) } : undefined),
  features: {
    clientCredentials: { enabled: true },
    resourceIndicators: {
      enabled: true,
      defaultResource: () => 'https://phigate.local',
      // The code grant's token is for the resource granted at sign-in, without a resource parameter.
      useGrantedResource: () => true,
      getResourceServerInfo: (ctx, resource, client) => ({
        scope: 'vectors',
        audience: (spec[client.clientId] || {}).audience || 'phigate',
        accessTokenFormat: 'jwt',
        accessTokenTTL: (spec[client.clientId] || {}).ttl || 300,
      }),
    },
  },
  extraTokenClaims: (ctx, token) => {
    const c = spec[token.accountId || token.clientId] || {};
    const claims = { groups: c.groups || [] };
    if (c.name) claims.name = c.name;
    if (c.email) claims.email = c.email;
    if (c.purpose) claims.purpose_of_use = c.purpose;
    return claims;
  },
};
if (process.env.IDP_JWKS) config.jwks = JSON.parse(fs.readFileSync(process.env.IDP_JWKS, 'utf8'));
const provider = new Provider(issuer, config);
provider.listen(port, '127.0.0.1', () => console.log(`issuer ${issuer}`));
