//! Schema versions: a fresh store is stamped with [`SCHEMA_VERSION`]; an older store is brought
//! forward one migration at a time inside a single transaction; a newer store is refused.

use crate::schema::META;
use crate::{Read, Store, StoreError, Write};

/// The schema version this build writes.
pub const SCHEMA_VERSION: u32 = 1;

/// Brings a store from version `n` to `n + 1`.
pub(crate) type Migration = fn(&Write<'_>) -> Result<(), StoreError>;

/// `MIGRATIONS[i]` takes a store from version `i + 1` to `i + 2`.
pub(crate) const MIGRATIONS: &[Migration] = &[];

const VERSION_KEY: &str = "schema_version";

pub(crate) fn stored_version(r: &Read<'_>) -> Result<Option<u32>, StoreError> {
    r.get(&META, VERSION_KEY)
}

pub(crate) fn bring_to(
    store: &Store,
    target: u32,
    migrations: &[Migration],
) -> Result<(), StoreError> {
    store.write(|w| {
        let found = w.get(&META, VERSION_KEY)?;
        match found {
            None => w.put(&META, VERSION_KEY, &target),
            Some(v) if v > target => Err(StoreError::TooNew {
                path: store.path().to_path_buf(),
                found: v,
                supported: target,
            }),
            Some(v) if v == target => Ok(()),
            Some(mut v) => {
                while v < target {
                    let step = v
                        .checked_sub(1)
                        .and_then(|i| migrations.get(i as usize))
                        .ok_or(StoreError::NoMigration { from: v })?;
                    step(w).map_err(|e| StoreError::Migration {
                        from: v,
                        source: Box::new(e),
                    })?;
                    v += 1;
                }
                w.put(&META, VERSION_KEY, &target)
            }
        }
    })
}
