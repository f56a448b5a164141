//! What each frequent write does to a stored device, declared once for every SQL store.
//!
//! The rules themselves live in [`logic`](crate::logic), written against a whole [`Device`]: the
//! memory store runs them on the device it holds. A SQL store would rather not read a whole
//! row to change a few columns, so it runs the same rule on a *fresh* device (holding only the
//! few columns the rule decides on, when it needs any) and lets the database merge the result
//! into the stored row. How each column merges is a [`Rule`]; which columns a write touches
//! and how is a [`DeviceWrite`], declared here once ([`AUTHENTICATE`], [`TOKEN_UPDATE`],
//! [`REPORT`], …) and rendered to SQL for each [`Dialect`] by [`DeviceWrite::sql`].
//!
//! The declarations are checked against the rules: a property test runs each rule on whole
//! random devices and compares the result, column by column, with the declaration applied
//! ([`DeviceWrite::apply`]) to the fresh device's values.

use crate::columns::{Column, Value};
use crate::model::Device;

/// How a column merges the value a write brings (`new`) into the stored one (`old`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Rule {
    /// `new`.
    Set,
    /// `new` when there is one, else `old`: facts a message may leave out
    /// (`DeviceInfo::merge`), a secret sent only sometimes.
    Overlay,
    /// The later of the two: times that only move forward (`last_seen_at`).
    Later,
    /// `old` when there is one, else `new`: set once (`enrolled_at`).
    First,
    /// `new` when the write binds an identity (brings an `identity_sha256`), else `old`:
    /// the columns describing the bound certificate.
    Bound,
    /// `identity_replaced_sha256`: the stored identity when the write binds a different one,
    /// else `old`.
    Replaced,
}

/// A write to one device's columns (its UDID is the key).
#[derive(Debug)]
pub struct DeviceWrite {
    /// What the write is, for errors and tests.
    pub name: &'static str,
    /// Whether it creates the device when there is none (an upsert); else it changes an
    /// existing device only.
    pub creates: bool,
    /// The columns it writes, each with its rule. Every other column keeps its value (or its
    /// default, for a created device).
    pub columns: &'static [(Column, Rule)],
}

/// The SQL a store speaks. Both take `INSERT … ON CONFLICT (…) DO UPDATE` with `excluded`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    /// SQLite: `?1`, `?2`, … placeholders.
    Sqlite,
    /// PostgreSQL: `$1`, `$2`, … placeholders.
    Postgres,
}

impl Dialect {
    /// Whether an upsert's `DO UPDATE` sets `col` on a stored device. SQLite keys devices by
    /// (topic, UDID): setting the topic there, even to the value it has, deletes and
    /// reinserts the row in both b-trees (enrollment took a third longer). The SQLite store
    /// moves a device whose topic changes before it writes it.
    pub fn upserts_set(self, col: Column) -> bool {
        !(self == Dialect::Sqlite && col == Column::Topic)
    }

    /// The `n`th parameter (from 1).
    pub fn placeholder(self, n: usize) -> String {
        match self {
            Dialect::Sqlite => format!("?{n}"),
            Dialect::Postgres => format!("${n}"),
        }
    }
}

const INFO: [(Column, Rule); 10] = [
    (Column::DeviceName, Rule::Overlay),
    (Column::Model, Rule::Overlay),
    (Column::ModelName, Rule::Overlay),
    (Column::ProductName, Rule::Overlay),
    (Column::OsVersion, Rule::Overlay),
    (Column::BuildVersion, Rule::Overlay),
    (Column::SerialNumber, Rule::Overlay),
    (Column::Imei, Rule::Overlay),
    (Column::Meid, Rule::Overlay),
    (Column::PhoneNumber, Rule::Overlay),
];

const fn concat<const A: usize, const B: usize, const N: usize>(
    a: [(Column, Rule); A],
    b: [(Column, Rule); B],
) -> [(Column, Rule); N] {
    assert!(A + B == N);
    let mut out = [(Column::Udid, Rule::Set); N];
    let mut i = 0;
    while i < A {
        out[i] = a[i];
        i += 1;
    }
    while i < N {
        out[i] = b[i - A];
        i += 1;
    }
    out
}

/// [`logic::authenticate`](crate::logic::authenticate): the facts sent overlaid, a new
/// enrollment awaiting its TokenUpdate, the identity bound.
pub static AUTHENTICATE: DeviceWrite = DeviceWrite {
    name: "authenticate",
    creates: true,
    columns: &concat::<10, 10, 20>(
        INFO,
        [
            (Column::Topic, Rule::Set),
            (Column::AuthenticatedAt, Rule::Set),
            (Column::LastSeenAt, Rule::Later),
            (Column::AwaitingTokenUpdate, Rule::Set),
            (Column::IdentityReplacedSha256, Rule::Replaced),
            (Column::IdentitySha256, Rule::Overlay),
            (Column::IdentitySubject, Rule::Bound),
            (Column::IdentitySerial, Rule::Bound),
            (Column::IdentityNotAfter, Rule::Bound),
            (Column::IdentityBoundAt, Rule::Bound),
        ],
    ),
};

/// [`logic::token_update`](crate::logic::token_update) on the device channel. The rule reads
/// the columns that decide re-enrollment ([`TOKEN_UPDATE_READS`]).
pub static TOKEN_UPDATE: DeviceWrite = DeviceWrite {
    name: "token update",
    creates: true,
    columns: &[
        (Column::Topic, Rule::Set),
        (Column::Token, Rule::Set),
        (Column::PushMagic, Rule::Set),
        (Column::UnlockToken, Rule::Overlay),
        (Column::AwaitingConfiguration, Rule::Set),
        (Column::TokenUpdatedAt, Rule::Set),
        (Column::EnrolledAt, Rule::First),
        (Column::LastSeenAt, Rule::Later),
        (Column::AwaitingTokenUpdate, Rule::Set),
    ],
};

/// The columns [`logic::token_update`](crate::logic::token_update) decides on.
pub const TOKEN_UPDATE_READS: [Column; 9] = [
    Column::EnrolledAt,
    Column::CheckedOutAt,
    Column::TokenUpdatedAt,
    Column::PushOutcome,
    Column::PushReason,
    Column::PushUnregisteredMs,
    Column::PushOutcomeAt,
    Column::LastSeenAt,
    Column::AwaitingTokenUpdate,
];

const REPORT_TIMES: [(Column, Rule); 3] = [
    (Column::LastSeenAt, Rule::Later),
    (Column::LastReportAt, Rule::Later),
    (Column::FirstReportAfterPushAt, Rule::First),
];

/// [`logic::report`](crate::logic::report) without device facts: the contact and whether it
/// answers the open push. The rule reads [`REPORT_READS`].
pub static REPORT: DeviceWrite = DeviceWrite {
    name: "report",
    creates: false,
    columns: &REPORT_TIMES,
};

/// [`logic::report`](crate::logic::report) of an acknowledged result carrying device facts.
pub static REPORT_WITH_INFO: DeviceWrite = DeviceWrite {
    name: "report with device facts",
    creates: false,
    columns: &concat::<3, 11, 14>(
        REPORT_TIMES,
        concat::<1, 10, 11>([(Column::InfoCollectedAt, Rule::Set)], INFO),
    ),
};

/// The columns [`logic::report`](crate::logic::report) decides on.
pub const REPORT_READS: [Column; 4] = [
    Column::LastSeenAt,
    Column::LastReportAt,
    Column::LastPushAt,
    Column::FirstReportAfterPushAt,
];

const PUSH_OUTCOME_COLUMNS: [(Column, Rule); 4] = [
    (Column::PushOutcome, Rule::Set),
    (Column::PushReason, Rule::Set),
    (Column::PushUnregisteredMs, Rule::Set),
    (Column::PushOutcomeAt, Rule::Set),
];

/// [`logic::push_attempt`](crate::logic::push_attempt): a new attempt, its outcome and answer
/// cleared.
pub static PUSH_ATTEMPT: DeviceWrite = DeviceWrite {
    name: "push attempt",
    creates: false,
    columns: &concat::<4, 2, 6>(
        PUSH_OUTCOME_COLUMNS,
        [
            (Column::LastPushAt, Rule::Set),
            (Column::FirstReportAfterPushAt, Rule::Set),
        ],
    ),
};

/// [`logic::push_outcome`](crate::logic::push_outcome).
pub static PUSH_OUTCOME: DeviceWrite = DeviceWrite {
    name: "push outcome",
    creates: false,
    columns: &concat::<4, 1, 5>(PUSH_OUTCOME_COLUMNS, [(Column::LastPushAt, Rule::First)]),
};

/// The whole device as given: every column [`Rule::Set`].
pub static SAVE: DeviceWrite = DeviceWrite {
    name: "save device",
    creates: true,
    columns: &every_column_set(),
};

const fn every_column_set() -> [(Column, Rule); 36] {
    let mut out = [(Column::Udid, Rule::Set); 36];
    let mut i = 0;
    while i < 36 {
        out[i] = (Column::ALL[i + 1], Rule::Set);
        i += 1;
    }
    out
}

/// Every declared write, for tests and for a store that prepares its statements up front.
pub static ALL: [&DeviceWrite; 7] = [
    &AUTHENTICATE,
    &TOKEN_UPDATE,
    &REPORT,
    &REPORT_WITH_INFO,
    &PUSH_ATTEMPT,
    &PUSH_OUTCOME,
    &SAVE,
];

impl DeviceWrite {
    /// The parameters to bind to [`DeviceWrite::sql`]: the UDID, then each column's value
    /// in `fresh` (the rule's result on a fresh device), in declared order.
    pub fn values<'a>(&self, fresh: &'a Device) -> Vec<Value<'a>> {
        let mut out = Vec::with_capacity(self.columns.len() + 1);
        out.push(Column::Udid.value(fresh));
        out.extend(self.columns.iter().map(|(c, _)| c.value(fresh)));
        out
    }

    /// The statement on table `devices`: an upsert when the write [`creates`](Self::creates),
    /// else an `UPDATE` that changes no row when the device is unknown. Parameter 1 is the
    /// UDID, parameter `i + 2` the `i`th column's new value (see [`DeviceWrite::values`]).
    ///
    /// # Panics
    /// If the declaration uses [`Rule::Bound`] or [`Rule::Replaced`] without writing
    /// `identity_sha256` (every declared write is rendered by a test).
    pub fn sql(&self, dialect: Dialect) -> String {
        let param = |i: usize| dialect.placeholder(i + 2);
        let new_of = |col: Column| -> String {
            let i = self
                .columns
                .iter()
                .position(|(c, _)| *c == col)
                .unwrap_or_else(|| panic!("{}: does not write {}", self.name, col.name()));
            if self.creates {
                format!("excluded.{}", col.name())
            } else {
                param(i)
            }
        };
        let sets: Vec<String> = self
            .columns
            .iter()
            .filter(|(col, _)| !self.creates || dialect.upserts_set(*col))
            .map(|&(col, rule)| {
                let old = format!("devices.{}", col.name());
                let new = new_of(col);
                let expr = match rule {
                    Rule::Set => new,
                    Rule::Overlay => format!("COALESCE({new}, {old})"),
                    Rule::First => format!("COALESCE({old}, {new})"),
                    Rule::Later => {
                        format!(
                            "CASE WHEN {old} IS NULL OR {old} < {new} THEN {new} ELSE {old} END"
                        )
                    }
                    Rule::Bound => {
                        let bound = new_of(Column::IdentitySha256);
                        format!("CASE WHEN {bound} IS NULL THEN {old} ELSE {new} END")
                    }
                    Rule::Replaced => {
                        let (new_id, old_id) = (
                            new_of(Column::IdentitySha256),
                            format!("devices.{}", Column::IdentitySha256.name()),
                        );
                        format!(
                            "CASE WHEN {new_id} IS NOT NULL AND {old_id} IS NOT NULL \
                             AND {old_id} <> {new_id} THEN {old_id} ELSE {old} END"
                        )
                    }
                };
                format!("{} = {expr}", col.name())
            })
            .collect();
        if !self.creates {
            return format!(
                "UPDATE devices SET {} WHERE udid = {}",
                sets.join(", "),
                dialect.placeholder(1)
            );
        }
        let names: Vec<&str> = std::iter::once(Column::Udid)
            .chain(self.columns.iter().map(|(c, _)| *c))
            .map(Column::name)
            .collect();
        let params: Vec<String> = (1..=names.len()).map(|n| dialect.placeholder(n)).collect();
        format!(
            "INSERT INTO devices ({}) VALUES ({}) ON CONFLICT (udid) DO UPDATE SET {}",
            names.join(", "),
            params.join(", "),
            sets.join(", ")
        )
    }

    /// The stored row after this write, as a database running [`DeviceWrite::sql`] leaves
    /// it: `stored` is the row before (`None`: no device), `fresh` the rule's result on a
    /// fresh device. `None` when the write changes nothing (no device and it does not
    /// create one). Every column in [`Column::ALL`]'s order.
    pub fn apply<'a>(
        &self,
        stored: Option<&'a Device>,
        fresh: &'a Device,
    ) -> Option<Vec<Value<'a>>> {
        let new_row = Column::row(fresh);
        let Some(stored) = stored else {
            if !self.creates {
                return None;
            }
            // An insert: the declared columns as given, the others at their defaults.
            let mut out: Vec<Value<'a>> = Column::ALL.iter().map(|c| default(*c)).collect();
            out[0] = new_row[0].clone();
            for (col, _) in self.columns {
                let i = index(*col);
                out[i] = new_row[i].clone();
            }
            return Some(out);
        };
        let old_row = Column::row(stored);
        let mut out = old_row.clone();
        let bound = !new_row[index(Column::IdentitySha256)].is_null();
        for &(col, rule) in self.columns {
            let i = index(col);
            let (old, new) = (&old_row[i], &new_row[i]);
            out[i] = match rule {
                Rule::Set => new.clone(),
                Rule::Overlay if new.is_null() => old.clone(),
                Rule::Overlay => new.clone(),
                Rule::First if old.is_null() => new.clone(),
                Rule::First => old.clone(),
                Rule::Later => match (old, new) {
                    (Value::Int(o), Value::Int(n)) if o >= n => old.clone(),
                    (Value::Int(_), Value::Null) => old.clone(),
                    _ => new.clone(),
                },
                Rule::Bound if bound => new.clone(),
                Rule::Bound => old.clone(),
                Rule::Replaced => {
                    let j = index(Column::IdentitySha256);
                    let (old_id, new_id) = (&old_row[j], &new_row[j]);
                    if !new_id.is_null() && !old_id.is_null() && old_id != new_id {
                        old_id.clone()
                    } else {
                        old.clone()
                    }
                }
            };
        }
        Some(out)
    }
}

/// A column's value in a row created without it (the table's default).
fn default(col: Column) -> Value<'static> {
    match col {
        Column::AwaitingConfiguration | Column::AwaitingTokenUpdate => Value::Bool(false),
        Column::Topic => Value::Text("".into()),
        _ => Value::Null,
    }
}

fn index(col: Column) -> usize {
    Column::ALL
        .iter()
        .position(|c| *c == col)
        .expect("every column is in Column::ALL")
}

#[cfg(test)]
mod tests;
