//! The typed table layer: tables of JSON records keyed by redb keys, opened through the
//! [`Read`] and [`Write`] views of a transaction.

use std::borrow::Borrow;
use std::marker::PhantomData;

use redb::{Key, ReadTransaction, ReadableTable, TableDefinition, WriteTransaction};
use serde::Serialize;
use serde::de::DeserializeOwned;

use crate::StoreError;

/// A table whose values are records of type `V`, stored as JSON.
pub struct Table<K: Key + 'static, V> {
    name: &'static str,
    _types: PhantomData<fn() -> (K, V)>,
}

impl<K: Key + 'static, V> std::fmt::Debug for Table<K, V> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("Table").field(&self.name).finish()
    }
}

impl<K: Key + 'static, V> Table<K, V> {
    pub const fn new(name: &'static str) -> Self {
        Table {
            name,
            _types: PhantomData,
        }
    }

    pub const fn name(&self) -> &'static str {
        self.name
    }

    fn def(&self) -> TableDefinition<'static, K, &'static [u8]> {
        TableDefinition::new(self.name)
    }
}

fn decode<V: DeserializeOwned>(table: &'static str, bytes: &[u8]) -> Result<V, StoreError> {
    serde_json::from_slice(bytes).map_err(|source| StoreError::Decode { table, source })
}

/// Decodes every value of a table scan, in key order.
fn decode_rows<'a, K: Key + 'static, V: DeserializeOwned>(
    table: &'static str,
    rows: redb::Range<'a, K, &'static [u8]>,
) -> Result<Vec<V>, StoreError> {
    let mut out = Vec::new();
    for row in rows {
        let (_, v) = row?;
        out.push(decode(table, v.value())?);
    }
    Ok(out)
}

/// Reads inside a read transaction.
pub struct Read<'t> {
    txn: &'t ReadTransaction,
}

impl<'t> Read<'t> {
    pub(crate) fn new(txn: &'t ReadTransaction) -> Self {
        Read { txn }
    }

    /// The record under `key`, if any. A table that was never written reads as empty.
    pub fn get<'k, K: Key + 'static, V: DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<V>, StoreError> {
        let t = match self.txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        match t.get(key)? {
            Some(v) => decode(table.name, v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Every record of the table in key order.
    pub fn all<K: Key + 'static, V: DeserializeOwned>(
        &self,
        table: &Table<K, V>,
    ) -> Result<Vec<V>, StoreError> {
        let t = match self.txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        decode_rows(table.name, t.iter()?)
    }

    /// Records whose keys fall in `range`, in key order.
    pub fn values_in<'k, K: Key + 'static, V: DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        range: impl std::ops::RangeBounds<K::SelfType<'k>> + 'k,
    ) -> Result<Vec<V>, StoreError> {
        let t = match self.txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(Vec::new()),
            Err(e) => return Err(e.into()),
        };
        decode_rows(table.name, t.range(range)?)
    }

    /// Number of records in the table.
    pub fn len<K: Key + 'static, V>(&self, table: &Table<K, V>) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        match self.txn.open_table(table.def()) {
            Ok(t) => Ok(t.len()?),
            Err(redb::TableError::TableDoesNotExist(_)) => Ok(0),
            Err(e) => Err(e.into()),
        }
    }
}

/// Reads and writes inside a write transaction; reads see the transaction's own writes.
pub struct Write<'t> {
    txn: &'t WriteTransaction,
}

impl<'t> Write<'t> {
    pub(crate) fn new(txn: &'t WriteTransaction) -> Self {
        Write { txn }
    }

    /// The record under `key`, if any.
    pub fn get<'k, K: Key + 'static, V: DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<V>, StoreError> {
        let t = self.txn.open_table(table.def())?;
        match t.get(key)? {
            Some(v) => decode(table.name, v.value()).map(Some),
            None => Ok(None),
        }
    }

    /// Every record of the table in key order.
    pub fn all<K: Key + 'static, V: DeserializeOwned>(
        &self,
        table: &Table<K, V>,
    ) -> Result<Vec<V>, StoreError> {
        let t = self.txn.open_table(table.def())?;
        decode_rows(table.name, t.iter()?)
    }

    /// Stores `value` under `key`, replacing what was there.
    pub fn put<'k, K: Key + 'static, V: Serialize>(
        &self,
        table: &Table<K, V>,
        key: impl Borrow<K::SelfType<'k>>,
        value: &V,
    ) -> Result<(), StoreError> {
        let bytes = serde_json::to_vec(value).map_err(|source| StoreError::Decode {
            table: table.name,
            source,
        })?;
        let mut t = self.txn.open_table(table.def())?;
        t.insert(key, bytes.as_slice())?;
        Ok(())
    }

    /// Records whose keys fall in `range`, in key order.
    pub fn values_in<'k, K: Key + 'static, V: DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        range: impl std::ops::RangeBounds<K::SelfType<'k>> + 'k,
    ) -> Result<Vec<V>, StoreError> {
        let t = self.txn.open_table(table.def())?;
        decode_rows(table.name, t.range(range)?)
    }

    /// Removes the record under `key`; true when there was one.
    pub fn remove<'k, K: Key + 'static, V>(
        &self,
        table: &Table<K, V>,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<bool, StoreError> {
        let mut t = self.txn.open_table(table.def())?;
        let existed = t.remove(key)?.is_some();
        Ok(existed)
    }

    /// Number of records in the table.
    pub fn len<K: Key + 'static, V>(&self, table: &Table<K, V>) -> Result<u64, StoreError> {
        use redb::ReadableTableMetadata;
        Ok(self.txn.open_table(table.def())?.len()?)
    }

    /// Keeps, of the records whose keys fall in `range`, those for which `keep` is true and
    /// removes the rest (an unreadable record is removed too). Returns how many were removed.
    pub fn retain_in<'k, K: Key + 'static, V: DeserializeOwned>(
        &self,
        table: &Table<K, V>,
        range: impl std::ops::RangeBounds<K::SelfType<'k>> + 'k,
        mut keep: impl FnMut(&V) -> bool,
    ) -> Result<u64, StoreError> {
        let mut t = self.txn.open_table(table.def())?;
        let mut removed = 0u64;
        t.retain_in(range, |_, v| {
            let kept = serde_json::from_slice::<V>(v).is_ok_and(|v| keep(&v));
            removed += u64::from(!kept);
            kept
        })?;
        Ok(removed)
    }
}

/// A table of raw byte values (large binary blobs that JSON would bloat).
pub struct RawTable<K: Key + 'static = &'static str> {
    name: &'static str,
    _key: PhantomData<fn() -> K>,
}

impl<K: Key + 'static> std::fmt::Debug for RawTable<K> {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_tuple("RawTable").field(&self.name).finish()
    }
}

impl<K: Key + 'static> RawTable<K> {
    pub const fn new(name: &'static str) -> Self {
        RawTable {
            name,
            _key: PhantomData,
        }
    }

    fn def(&self) -> TableDefinition<'static, K, &'static [u8]> {
        TableDefinition::new(self.name)
    }
}

impl Read<'_> {
    /// The bytes under `key` in a raw table.
    pub fn get_raw<'k, K: Key + 'static>(
        &self,
        table: &RawTable<K>,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let t = match self.txn.open_table(table.def()) {
            Ok(t) => t,
            Err(redb::TableError::TableDoesNotExist(_)) => return Ok(None),
            Err(e) => return Err(e.into()),
        };
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }
}

impl Write<'_> {
    /// The bytes under `key` in a raw table, inside this write.
    pub fn get_raw<'k, K: Key + 'static>(
        &self,
        table: &RawTable<K>,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<Option<Vec<u8>>, StoreError> {
        let t = self.txn.open_table(table.def())?;
        Ok(t.get(key)?.map(|v| v.value().to_vec()))
    }

    pub fn put_raw<'k, K: Key + 'static>(
        &self,
        table: &RawTable<K>,
        key: impl Borrow<K::SelfType<'k>>,
        value: &[u8],
    ) -> Result<(), StoreError> {
        let mut t = self.txn.open_table(table.def())?;
        t.insert(key, value)?;
        Ok(())
    }

    pub fn remove_raw<'k, K: Key + 'static>(
        &self,
        table: &RawTable<K>,
        key: impl Borrow<K::SelfType<'k>>,
    ) -> Result<bool, StoreError> {
        let mut t = self.txn.open_table(table.def())?;
        let existed = t.remove(key)?.is_some();
        Ok(existed)
    }
}
