//! Write ordering (security review finding 10): a write whose commit fails for real — a
//! statement a trigger refuses, or a commit SQLite refuses at its end — or whose request is
//! dropped halfway leaves the gateway presenting exactly what the database says, and the
//! secret store version the row pins intact; a rotation an operator makes directly in Vault
//! is still adopted, while a marked version no row names never is.

use std::time::{Duration, Instant};

use axum::http::{Method, StatusCode};
use serde_json::{json, Value};

use super::{
    basic, by_file, call, cert_item, certificates_uri, create_credential, credentials_uri, id_of,
    p12s, rows, saved, setup, AppState, Env, DEV, P12_PASSWORD,
};
use crate::p12::Material;
use crate::secret::Secret;
use crate::secret_store::{JsonMap, SecretStore, WriteId};

/// Makes the next statement that sets a certificate's or a credential's pinned version fail
/// (`RAISE`), as a database refusing the write does.
const REFUSE_STATEMENT: &str = "
    CREATE TRIGGER f10_refuse_cert BEFORE UPDATE OF vault_version ON certificates
        BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;
    CREATE TRIGGER f10_refuse_cred BEFORE UPDATE OF secret_version ON credentials
        BEGIN SELECT RAISE(ABORT, 'refused by the test'); END;";

/// Makes the *commit* fail, after every statement succeeded: the pinning statement also
/// inserts a row breaking a deferred foreign key, which SQLite checks only at `COMMIT`.
const REFUSE_COMMIT: &str = "
    CREATE TABLE f10_parent (id INTEGER PRIMARY KEY);
    CREATE TABLE f10_poison (parent INTEGER REFERENCES f10_parent(id) DEFERRABLE INITIALLY DEFERRED);
    CREATE TRIGGER f10_poison_cert AFTER UPDATE OF vault_version ON certificates
        BEGIN INSERT INTO f10_poison VALUES (1); END;
    CREATE TRIGGER f10_poison_cred AFTER UPDATE OF secret_version ON credentials
        BEGIN INSERT INTO f10_poison VALUES (1); END;";

const HEAL: &str = "
    DROP TRIGGER IF EXISTS f10_refuse_cert; DROP TRIGGER IF EXISTS f10_refuse_cred;
    DROP TRIGGER IF EXISTS f10_poison_cert; DROP TRIGGER IF EXISTS f10_poison_cred;
    DROP TABLE IF EXISTS f10_poison; DROP TABLE IF EXISTS f10_parent;";

async fn sql(s: &AppState, script: &str) {
    sqlx::raw_sql(script).execute(s.store.pool()).await.unwrap();
}

fn cert_path(id: i64) -> String {
    format!("accounts/a/certificates/{id}")
}

/// The Vault version the certificate's row pins.
async fn pinned(s: &AppState, id: i64) -> u64 {
    s.store
        .certificate("a", id)
        .await
        .unwrap()
        .unwrap()
        .vault_version
}

/// What the reconciler gives the gateway for the certificate after a full rebuild (and,
/// with `watch`, the periodic Vault watch first): version and chain.
async fn served(s: &AppState, id: i64, watch: bool) -> (u64, String) {
    if watch {
        s.reconciler.rebuild(true).await.unwrap();
    }
    s.reconciler.rebuild(false).await.unwrap();
    s.reconciler
        .served_material(id)
        .await
        .unwrap_or_else(|| panic!("certificate {id} is not served"))
}

fn chain_of(m: &JsonMap) -> String {
    m["certificateChain"].as_str().unwrap().to_owned()
}

/// Creates a certificate from the first test P12; answers its id once it is served.
async fn first_certificate(env: &Env) -> i64 {
    let s = &env.state;
    let (st, v) = call(
        s,
        Method::POST,
        &certificates_uri("a"),
        Some(DEV),
        Some(json!([cert_item("pinned", &p12s()[0], P12_PASSWORD, None)])),
    )
    .await;
    assert_eq!(st, StatusCode::CREATED, "{v}");
    let id = id_of(saved(&v));
    assert_eq!(pinned(s, id).await, 1);
    // Served, and known to the watch.
    assert_eq!(served(env_state(env), id, false).await.0, 1);
    id
}

fn env_state(env: &Env) -> &AppState {
    &env.state
}

async fn update_by_file(s: &AppState, id: i64) -> (StatusCode, Value) {
    let meta = json!({"id": id, "name": "renamed", "password": P12_PASSWORD});
    by_file(s, Method::PUT, "a", &p12s()[1].bytes, meta).await
}

#[tokio::test]
async fn a_certificate_update_whose_commit_fails_keeps_presenting_the_pinned_version() {
    let env = setup().await;
    let s = &env.state;
    let id = first_certificate(&env).await;
    let v1 = env
        .memory
        .read(&cert_path(id), Some(1))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(served(s, id, true).await, (1, chain_of(&v1)));

    for (script, what) in [
        (REFUSE_STATEMENT, "a refused statement"),
        (REFUSE_COMMIT, "a refused commit"),
    ] {
        sql(s, script).await;
        let (st, v) = update_by_file(s, id).await;
        assert_eq!(
            (st, &v["code"]),
            (StatusCode::INTERNAL_SERVER_ERROR, &json!("internal")),
            "{what}: {v}"
        );
        sql(s, HEAL).await;
        // The row is as it was: name, certificate and the version it pins.
        let row = s.store.certificate("a", id).await.unwrap().unwrap();
        assert_eq!(
            (row.name.as_str(), row.vault_version),
            ("pinned", 1),
            "{what}"
        );
        assert!(row.info.subject.contains(&p12s()[0].cn), "{what}");
        // Vault: the pinned version intact, the new one destroyed (undone).
        assert_eq!(
            env.memory.read(&cert_path(id), Some(1)).await.unwrap(),
            Some(v1.clone()),
            "{what}"
        );
        assert_eq!(
            env.memory.current_version(&cert_path(id)).await.unwrap(),
            Some(1),
            "{what}: the new version was destroyed"
        );
        // And the gateway is given the pinned version, the watch included.
        assert_eq!(served(s, id, true).await, (1, chain_of(&v1)), "{what}");
    }

    // Healed, the same update goes through and is served.
    let (st, v) = update_by_file(s, id).await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let now = pinned(s, id).await;
    assert_eq!(now, 4, "versions 2 and 3 were the undone writes");
    let stored = env
        .memory
        .read(&cert_path(id), Some(now))
        .await
        .unwrap()
        .unwrap();
    assert!(
        stored["mtlsgateWriteId"].is_string(),
        "the API marks its writes"
    );
    assert_eq!(served(s, id, true).await, (now, chain_of(&stored)));
}

#[tokio::test]
async fn an_operators_rotation_in_vault_is_adopted_and_an_unnamed_api_write_never_is() {
    let env = setup().await;
    let s = &env.state;
    let id = first_certificate(&env).await;
    let path = cert_path(id);
    let v1 = env.memory.read(&path, Some(1)).await.unwrap().unwrap();
    let row_mark = v1["mtlsgateWriteId"].clone();
    assert!(row_mark.is_string());

    // `bao kv patch` of the chain: the other fields, the API's mark included, are kept.
    // That mark is the row's own: an operator's rotation, adopted.
    let mut patched = v1.clone();
    patched.insert("certificateChain".into(), json!(p12s()[1].cert_pem));
    assert_eq!(env.memory.write(&path, &patched).await.unwrap(), 2);
    assert_eq!(served(s, id, true).await, (2, p12s()[1].cert_pem.clone()));
    assert_eq!(pinned(s, id).await, 2, "the row records what is served");

    // An API write that never committed and whose undo failed too: marked with a write id
    // no row names. Not served, however often the watch looks.
    let stray = Material {
        chain_pem: "stray chain".into(),
        key_pem: Secret::new("stray key"),
    };
    let v3 = s
        .secrets
        .put_certificate("a", id, &stray, &WriteId::new())
        .await
        .unwrap();
    assert_eq!(v3, 3);
    for _ in 0..3 {
        assert_eq!(served(s, id, true).await, (2, p12s()[1].cert_pem.clone()));
    }
    assert_eq!(pinned(s, id).await, 2);
    assert!(
        env.memory.read(&path, Some(3)).await.unwrap().is_some(),
        "left alone within its grace period (it may be about to commit)"
    );

    // `bao kv put` of the two fields, no mark: an operator's rotation, adopted.
    let mut put = JsonMap::new();
    put.insert("certificateChain".into(), json!(p12s()[0].cert_pem));
    put.insert("privateKey".into(), json!("operator key"));
    assert_eq!(env.memory.write(&path, &put).await.unwrap(), 4);
    assert_eq!(served(s, id, true).await, (4, p12s()[0].cert_pem.clone()));
    assert_eq!(pinned(s, id).await, 4);

    // Deleted in Vault: no longer served.
    env.memory.destroy(&path).await.unwrap();
    s.reconciler.rebuild(true).await.unwrap();
    assert_eq!(s.reconciler.served_material(id).await, None);
}

#[tokio::test]
async fn a_credential_update_whose_commit_fails_keeps_the_pinned_secrets() {
    let env = setup().await;
    let s = &env.state;
    let c = create_credential(s, "a", basic("Old-Pass-1x")).await;
    let id = id_of(&c);
    let path = format!("accounts/a/credentials/{id}");
    let row = s.store.credential("a", id).await.unwrap().unwrap();
    assert_eq!(row.secret_version, 1, "the row pins its secrets' version");

    for script in [REFUSE_STATEMENT, REFUSE_COMMIT] {
        sql(s, script).await;
        let mut body = basic("New-Pass-2y");
        body["name"] = json!("renamed");
        let (st, v) = call(
            s,
            Method::PUT,
            &format!("{}/{id}", credentials_uri("a")),
            Some(DEV),
            Some(body),
        )
        .await;
        sql(s, HEAL).await;
        assert_eq!(
            (st, &v["code"]),
            (StatusCode::INTERNAL_SERVER_ERROR, &json!("internal")),
            "{v}"
        );
        let row = s.store.credential("a", id).await.unwrap().unwrap();
        assert_eq!((row.name.as_str(), row.secret_version), ("basic", 1));
        let kept = s
            .secrets
            .get_credential("a", id, row.secret_version)
            .await
            .unwrap()
            .unwrap();
        assert_eq!(kept["password"], "Old-Pass-1x", "nothing was overwritten");
        assert_eq!(
            env.memory.current_version(&path).await.unwrap(),
            Some(1),
            "the new version was destroyed"
        );
    }

    // Healed: the update pins its new version; the one before is left as history.
    let (st, v) = call(
        s,
        Method::PUT,
        &format!("{}/{id}", credentials_uri("a")),
        Some(DEV),
        Some(basic("New-Pass-2y")),
    )
    .await;
    assert_eq!(st, StatusCode::OK, "{v}");
    let row = s.store.credential("a", id).await.unwrap().unwrap();
    assert_eq!(row.secret_version, 4);
    let now = s.secrets.get_credential("a", id, 4).await.unwrap().unwrap();
    assert_eq!(now["password"], "New-Pass-2y");

    // A delete whose commit fails leaves the credential and its secrets whole.
    sql(s, "CREATE TRIGGER f10_no_delete BEFORE UPDATE OF deleted ON credentials BEGIN SELECT RAISE(ABORT, 'no'); END;").await;
    let (st, _) = call(
        s,
        Method::DELETE,
        &format!("{}/{id}", credentials_uri("a")),
        Some(DEV),
        None,
    )
    .await;
    sql(s, "DROP TRIGGER f10_no_delete;").await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert!(s.store.credential("a", id).await.unwrap().is_some());
    assert!(s
        .secrets
        .get_credential("a", id, 4)
        .await
        .unwrap()
        .is_some());
}

#[tokio::test]
async fn a_certificate_delete_whose_commit_fails_keeps_the_certificate_served() {
    let env = setup().await;
    let s = &env.state;
    let id = first_certificate(&env).await;
    sql(s, "CREATE TRIGGER f10_no_delete BEFORE UPDATE OF deleted ON certificates BEGIN SELECT RAISE(ABORT, 'no'); END;").await;
    let (st, _) = call(
        s,
        Method::DELETE,
        &format!("{}/{id}", certificates_uri("a")),
        Some(DEV),
        None,
    )
    .await;
    sql(s, "DROP TRIGGER f10_no_delete;").await;
    assert_eq!(st, StatusCode::INTERNAL_SERVER_ERROR);
    assert_eq!(pinned(s, id).await, 1);
    assert_eq!(served(s, id, true).await.0, 1, "the key was not destroyed");
}

/// Waits (at most 10 s) until `done` holds.
async fn eventually<F: std::future::Future<Output = bool>>(
    what: &str,
    mut done: impl FnMut() -> F,
) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !done().await {
        assert!(Instant::now() < deadline, "never: {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

#[tokio::test]
async fn a_request_dropped_between_vault_and_the_commit_still_completes_its_write() {
    let env = setup().await;
    let s = &env.state;
    let meta = json!({"name": "dropped", "password": P12_PASSWORD});
    let mut request = Box::pin(by_file(s, Method::POST, "a", &p12s()[0].bytes, meta));
    // Hold the secret store write, then drop the request there, as its deadline would.
    tokio::select! {
        answer = &mut request => panic!("answered before its write: {answer:?}"),
        () = env.memory.hold_writes_until_one_arrives() => {}
    }
    drop(request);
    env.memory.open_gate();
    // The write goes on without its request (it holds the write lock to its end): row
    // committed, pinned to the version written, and served.
    drop(s.store.write_lock().await);
    eventually("the dropped create committed", || async {
        rows(s, "certificates", "a").await == 1
            && s.store.certificates("a").await.unwrap()[0].vault_version == 1
    })
    .await;
    let id = s.store.certificates("a").await.unwrap()[0].id;
    assert_eq!(served(s, id, false).await.0, 1);
}

#[tokio::test]
async fn a_request_dropped_before_a_failing_commit_still_undoes_its_write() {
    let env = setup().await;
    let s = &env.state;
    let c = create_credential(s, "a", basic("Old-Pass-1x")).await;
    let id = id_of(&c);
    let path = format!("accounts/a/credentials/{id}");
    sql(s, REFUSE_COMMIT).await;
    let uri = format!("{}/{id}", credentials_uri("a"));
    let mut request = Box::pin(call(
        s,
        Method::PUT,
        &uri,
        Some(DEV),
        Some(basic("New-Pass-2y")),
    ));
    tokio::select! {
        answer = &mut request => panic!("answered before its write: {answer:?}"),
        () = env.memory.hold_writes_until_one_arrives() => {}
    }
    drop(request);
    env.memory.open_gate();
    // Its commit fails with nobody waiting for the answer: the new version is still undone
    // (the write holds the write lock to its end).
    drop(s.store.write_lock().await);
    assert_eq!(env.memory.current_version(&path).await.unwrap(), Some(1));
    assert_eq!(env.memory.read(&path, Some(2)).await.unwrap(), None);
    assert_eq!(
        s.secrets
            .put_credential("a", id, &JsonMap::new())
            .await
            .unwrap(),
        3,
        "version 2 was written, then destroyed"
    );
    sql(s, HEAL).await;
    let row = s.store.credential("a", id).await.unwrap().unwrap();
    assert_eq!(row.secret_version, 1);
    let kept = s.secrets.get_credential("a", id, 1).await.unwrap().unwrap();
    assert_eq!(kept["password"], "Old-Pass-1x");
}

/// An AppKey creation dropped at its secret store write still commits, and the gateway's view
/// of AppKeys (what the snapshot carries) has the key the database has.
#[tokio::test]
async fn an_appkey_creation_dropped_halfway_still_reaches_the_gateways_view() {
    let env = setup().await;
    let s = &env.state;
    let mut request = Box::pin(call(
        s,
        Method::POST,
        "/api/account/a/appkeys",
        Some(DEV),
        None,
    ));
    tokio::select! {
        answer = &mut request => panic!("answered before its write: {answer:?}"),
        () = env.memory.hold_writes_until_one_arrives() => {}
    }
    drop(request);
    env.memory.open_gate();
    drop(s.store.write_lock().await);
    eventually(
        "the dropped AppKey creation committed and is known",
        || async {
            let rows = s.store.appkeys("a").await.unwrap();
            let known: Vec<i64> = s.appkeys.all().iter().map(|k| k.row.id).collect();
            rows.len() == 1 && known == vec![rows[0].id]
        },
    )
    .await;
}
