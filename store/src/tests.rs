use super::*;
use crate::schema::{META, TOKENS, TokenRecord, TokenRole};

fn temp_dir(name: &str) -> PathBuf {
    let dir = std::env::temp_dir().join(format!("wispd-store-{name}-{}", std::process::id()));
    let _ = std::fs::remove_dir_all(&dir);
    std::fs::create_dir_all(&dir).expect("temp dir");
    dir
}

fn token(id: &str) -> TokenRecord {
    TokenRecord {
        id: id.into(),
        name: format!("name-{id}"),
        role: TokenRole::User,
        domains: vec!["example.com".into()],
        secret_sha256: [7; 32],
        created_at: 1,
    }
}

#[test]
fn fresh_store_is_stamped_with_current_version_and_keeps_data_across_reopen() {
    let dir = temp_dir("fresh");
    {
        let store = Store::open(&dir).expect("open");
        assert_eq!(store.schema_version().expect("version"), SCHEMA_VERSION);
        store
            .write(|w| w.put(&TOKENS, "abc", &token("abc")))
            .expect("put");
    }
    let store = Store::open(&dir).expect("reopen");
    let got = store
        .read(|r| r.get(&TOKENS, "abc"))
        .expect("get")
        .expect("present");
    assert_eq!(got.name, "name-abc");
    assert_eq!(store.read(|r| r.len(&TOKENS)).expect("len"), 1);
}

#[test]
fn store_written_by_newer_wispd_is_refused_with_versions_in_message() {
    let dir = temp_dir("newer");
    {
        let store = Store::open(&dir).expect("open");
        store
            .write(|w| w.put(&META, "schema_version", &(SCHEMA_VERSION + 5)))
            .expect("bump");
    }
    let err = Store::open(&dir).expect_err("must refuse");
    let msg = err.to_string();
    assert!(matches!(err, StoreError::TooNew { .. }), "{msg}");
    assert!(
        msg.contains(&format!("version {}", SCHEMA_VERSION + 5)),
        "{msg}"
    );
    assert!(msg.contains(&format!("up to {SCHEMA_VERSION}")), "{msg}");
}

fn rename_tokens(w: &Write<'_>) -> Result<(), StoreError> {
    for mut t in w.all(&TOKENS)? {
        t.name = t.name.to_uppercase();
        w.put(&TOKENS, t.id.clone().as_str(), &t)?;
    }
    Ok(())
}

fn failing(_: &Write<'_>) -> Result<(), StoreError> {
    Err(StoreError::NoMigration { from: 42 })
}

#[test]
fn older_store_is_migrated_forward_in_one_transaction() {
    let dir = temp_dir("migrate");
    {
        let store = Store::open_with(&dir, 1, &[], CACHE_BYTES).expect("open v1");
        store
            .write(|w| w.put(&TOKENS, "abc", &token("abc")))
            .expect("put");
    }
    let store = Store::open_with(&dir, 2, &[rename_tokens], CACHE_BYTES).expect("migrate to v2");
    assert_eq!(store.schema_version().expect("version"), 2);
    let got = store
        .read(|r| r.get(&TOKENS, "abc"))
        .expect("get")
        .expect("present");
    assert_eq!(got.name, "NAME-ABC");
}

#[test]
fn failed_migration_leaves_old_version_and_data_untouched() {
    let dir = temp_dir("migrate-fail");
    {
        let store = Store::open_with(&dir, 1, &[], CACHE_BYTES).expect("open v1");
        store
            .write(|w| w.put(&TOKENS, "abc", &token("abc")))
            .expect("put");
    }
    let err =
        Store::open_with(&dir, 3, &[rename_tokens, failing], CACHE_BYTES).expect_err("must fail");
    assert!(
        matches!(err, StoreError::Migration { from: 2, .. }),
        "{err}"
    );
    let store = Store::open_with(&dir, 1, &[], CACHE_BYTES).expect("still v1");
    assert_eq!(store.schema_version().expect("version"), 1);
    let got = store
        .read(|r| r.get(&TOKENS, "abc"))
        .expect("get")
        .expect("present");
    assert_eq!(
        got.name, "name-abc",
        "first migration step must have rolled back too"
    );
}

#[test]
fn aborted_write_keeps_nothing() {
    let dir = temp_dir("abort");
    let store = Store::open(&dir).expect("open");
    let res: Result<(), StoreError> = store.write(|w| {
        w.put(&TOKENS, "abc", &token("abc"))?;
        Err(StoreError::NoMigration { from: 0 })
    });
    assert!(res.is_err());
    assert!(
        store
            .read(|r| r.get(&TOKENS, "abc"))
            .expect("get")
            .is_none()
    );
}

#[test]
fn second_open_of_same_store_reports_it_in_use() {
    let dir = temp_dir("inuse");
    let _first = Store::open(&dir).expect("open");
    let err = Store::open(&dir).expect_err("second open");
    assert!(matches!(err, StoreError::InUse { .. }), "{err}");
}
