//! The control plane on a server database: the same path as on SQLite — upload, map, forward
//! over mTLS through real Envoy, a user added with the command line — with PostgreSQL and
//! MariaDB (from `scripts/db`) holding the metadata.

use serde_json::Value;

use crate::harness::{error_code, server_database, Options, ServerDb, Stack};
use crate::upstream::Target;

const ACCOUNT: &str = "52653865";

async fn the_whole_path_runs_on(kind: ServerDb) {
    let stack = Stack::start_with(Options {
        database_url: Some(server_database(kind)),
        ..Default::default()
    })
    .await;
    let target = Target::start().await;
    let client = target.client_ca.client("brand-client-1");
    let cert = stack
        .upload_ok(
            ACCOUNT,
            "brand-cert",
            client.p12(&target.client_ca, "s3cret"),
            "s3cret",
        )
        .await;
    let url = target.upstream.url("/oauth/token?grant=1");
    stack
        .map_ok(
            ACCOUNT,
            cert,
            "1",
            &url,
            "idp-token",
            &target.server_ca.cert_pem,
        )
        .await;
    let r = stack.forward_when_mapped(ACCOUNT, &url, "IDP").await;
    let seen: Value = r.json().await.expect("json");
    assert_eq!(seen["path"], "/oauth/token?grant=1");
    assert_eq!(seen["clientCertSha256"], client.fingerprint());

    // The unique indexes of the server hold the same rules: the same certificate name again
    // is refused, the same name with another case is not.
    let again = stack
        .upload(
            ACCOUNT,
            "brand-cert",
            client.p12(&target.client_ca, "s3cret"),
            "s3cret",
        )
        .await;
    assert_eq!(error_code(again).await.0, 409);
    let other = client.p12(&target.client_ca, "s3cret");
    stack
        .upload_ok(ACCOUNT, "Brand-Cert", other, "s3cret")
        .await;

    // The mapping revision moved with the write, and reads back from the server.
    let token = stack.token_for(ACCOUNT).await;
    let r = stack
        .client
        .get(format!(
            "{}/api/account/{ACCOUNT}/configuration/ac-common/mtls",
            stack.api
        ))
        .bearer_auth(&token)
        .send()
        .await
        .expect("list");
    assert_eq!(r.status(), 200);
    assert_eq!(r.headers()["ac-revision"], "1");
    let list: Value = r.json().await.expect("json");
    assert_eq!(list.as_array().map(Vec::len), Some(1), "{list}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_path_runs_on_postgres() {
    the_whole_path_runs_on(ServerDb::Postgres).await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn the_whole_path_runs_on_mariadb() {
    the_whole_path_runs_on(ServerDb::MariaDb).await;
}
