//! wispd's single redb store: the file, its schema version and migrations, and the typed table layer
//! every engine persists through.
//!
//! All state lives in one file, `DATA_DIR/wispd.redb`. Values are JSON-encoded records (see
//! [`schema`]) so that fields can be added with `#[serde(default)]`; structural changes bump
//! [`SCHEMA_VERSION`] and add a migration.

mod migrate;
pub mod schema;
mod table;

use std::path::{Path, PathBuf};
use std::sync::Arc;

use redb::{Database, ReadTransaction, ReadableDatabase, WriteTransaction};

pub use migrate::SCHEMA_VERSION;
pub use table::{RawTable, Read, Table, Write};

/// The store file's name inside the data directory.
pub const FILE_NAME: &str = "wispd.redb";

/// Everything that can go wrong reading or writing the store.
#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error(
        "store {path} has schema version {found}, but this wispd understands versions up to {supported}; run a newer wispd (or restore a backup made by this version)"
    )]
    TooNew {
        path: PathBuf,
        found: u32,
        supported: u32,
    },
    #[error(
        "store {path} is already open in another process (is another wispd running with this data dir?)"
    )]
    InUse { path: PathBuf },
    #[error("store {path}: {source}")]
    Open { path: PathBuf, source: redb::Error },
    #[error("store has schema version {from}, which this wispd has no migration from")]
    NoMigration { from: u32 },
    #[error("migrating store from schema version {from}: {source}")]
    Migration { from: u32, source: Box<StoreError> },
    #[error("record in table `{table}` is unreadable: {source}")]
    Decode {
        table: &'static str,
        source: serde_json::Error,
    },
    #[error("store I/O: {0}")]
    Db(#[from] redb::Error),
}

macro_rules! into_db_error {
    ($($t:ty),*) => {$(
        impl From<$t> for StoreError {
            fn from(e: $t) -> Self { StoreError::Db(e.into()) }
        }
    )*};
}
into_db_error!(
    redb::DatabaseError,
    redb::TransactionError,
    redb::TableError,
    redb::StorageError,
    redb::CommitError
);

/// The store's page cache in the process (redb's default is 1 GiB): what is read again soon
/// (mailbox indexes, recent messages) stays in it; the kernel's page cache holds the rest.
pub const CACHE_BYTES: usize = 256 << 20;

/// A handle on the open store; cheap to clone and share between tasks.
///
/// redb is synchronous: async callers run store work on a blocking thread.
#[derive(Clone)]
pub struct Store {
    db: Arc<Database>,
    path: PathBuf,
}

impl std::fmt::Debug for Store {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Store").field("path", &self.path).finish()
    }
}

impl Store {
    /// Opens (or creates) the store in `data_dir`, refusing a store written by a newer wispd and
    /// migrating one written by an older wispd.
    pub fn open(data_dir: &Path) -> Result<Store, StoreError> {
        Self::open_with(data_dir, SCHEMA_VERSION, migrate::MIGRATIONS, CACHE_BYTES)
    }

    /// As [`Store::open`], with a cache of `cache_bytes` (a bulk writer such as `wispd import`
    /// gains nothing from caching what it wrote).
    pub fn open_with_cache(data_dir: &Path, cache_bytes: usize) -> Result<Store, StoreError> {
        Self::open_with(data_dir, SCHEMA_VERSION, migrate::MIGRATIONS, cache_bytes)
    }

    fn open_with(
        data_dir: &Path,
        target: u32,
        migrations: &[migrate::Migration],
        cache_bytes: usize,
    ) -> Result<Store, StoreError> {
        let path = data_dir.join(FILE_NAME);
        let db = redb::Builder::new()
            .set_cache_size(cache_bytes)
            .create(&path)
            .map_err(|e| match e {
                redb::DatabaseError::DatabaseAlreadyOpen => {
                    StoreError::InUse { path: path.clone() }
                }
                other => StoreError::Open {
                    path: path.clone(),
                    source: other.into(),
                },
            })?;
        let store = Store {
            db: Arc::new(db),
            path,
        };
        migrate::bring_to(&store, target, migrations)?;
        Ok(store)
    }

    /// Path of the store file.
    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Runs `f` in a read transaction (a consistent snapshot).
    pub fn read<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Read<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        let txn: ReadTransaction = self.db.begin_read().map_err(StoreError::from)?;
        f(&Read::new(&txn))
    }

    /// Runs `f` in a write transaction and commits it durably (fsync'd) when `f` succeeds; an error
    /// from `f` aborts the transaction and nothing of it is kept.
    pub fn write<R, E: From<StoreError>>(
        &self,
        f: impl FnOnce(&Write<'_>) -> Result<R, E>,
    ) -> Result<R, E> {
        // redb's default durability is `Immediate`: commit returns after the fsync.
        let txn: WriteTransaction = self.db.begin_write().map_err(StoreError::from)?;
        let out = f(&Write::new(&txn))?;
        txn.commit().map_err(StoreError::from)?;
        Ok(out)
    }

    /// The schema version recorded in the store.
    pub fn schema_version(&self) -> Result<u32, StoreError> {
        self.read(migrate::stored_version).map(|v| v.unwrap_or(0))
    }
}

#[cfg(test)]
mod tests;

/// Now, in unix seconds: what every stored timestamp counts in (0 before 1970, saturating far
/// in the future).
pub fn unix_now() -> i64 {
    std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| i64::try_from(d.as_secs()).unwrap_or(i64::MAX))
        .unwrap_or(0)
}
