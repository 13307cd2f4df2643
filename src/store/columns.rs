//! Rows sent to PostgreSQL column by column: one typed array per column, bound in the binary
//! format and turned back into rows by `unnest`. PostgreSQL takes binary arrays of text,
//! integers and times without parsing anything; only a few values go as text to be parsed
//! once each (jsonb, which must be parsed to be stored; numeric; text arrays). Rows sent as
//! one JSON document made it parse every payload three times and print it once (figures in
//! bench/HISTORY.md).

use std::borrow::Cow;

use chrono::{DateTime, Utc};
use rust_decimal::Decimal;
use sqlx::postgres::PgArguments;
use sqlx::query::Query;
use sqlx::Postgres;

/// The values of one column, in row order.
pub(super) enum Data<'a> {
    Text(Vec<Option<&'a str>>),
    Bytes(Vec<Option<&'a [u8]>>),
    Int(Vec<Option<i32>>),
    Time(Vec<Option<DateTime<Utc>>>),
    Bool(Vec<Option<bool>>),
    /// Values sent as text and cast to the type named: jsonb (JSON text; PostgreSQL parses
    /// it once, as it must to store it), numeric (the binary form of a zero drops its scale:
    /// `0.0` would read back as `0`), text[] (PostgreSQL's array literal: an array of arrays
    /// cannot be bound).
    Cast(
        Vec<Option<Cow<'a, str>>>,
        // The statements' text was made with the cast (store/sql_gen.rs): not read at run time.
        #[cfg_attr(not(test), allow(dead_code))] &'static str,
    ),
}

impl Data<'_> {
    /// The type of the bound array.
    #[cfg(test)]
    pub fn array_type(&self) -> &'static str {
        match self {
            Data::Text(_) | Data::Cast(..) => "text[]",
            Data::Bytes(_) => "bytea[]",
            Data::Int(_) => "integer[]",
            Data::Time(_) => "timestamptz[]",
            Data::Bool(_) => "boolean[]",
        }
    }

    /// The cast that turns an element into the column's value, when it is sent as text.
    #[cfg(test)]
    pub fn cast(&self) -> Option<&'static str> {
        match self {
            Data::Cast(_, to) => Some(to),
            _ => None,
        }
    }
}

/// One named column.
pub(super) struct Column<'a> {
    /// The name the statements' text was made with (store/sql_gen.rs): not read at run time.
    #[cfg_attr(not(test), allow(dead_code))]
    pub name: &'static str,
    pub data: Data<'a>,
}

/// Builds the columns of a slice of rows, one accessor per column, in the order of the
/// statement's column list.
pub(super) struct Columns<'a, T> {
    rows: &'a [T],
    cols: Vec<Column<'a>>,
}

impl<'a, T> Columns<'a, T> {
    pub fn new(rows: &'a [T]) -> Self {
        Columns {
            rows,
            cols: Vec::new(),
        }
    }

    fn push<V>(
        mut self,
        name: &'static str,
        wrap: impl FnOnce(Vec<V>) -> Data<'a>,
        get: impl Fn(&'a T) -> V,
    ) -> Self {
        let values = self.rows.iter().map(get).collect();
        self.cols.push(Column {
            name,
            data: wrap(values),
        });
        self
    }

    fn cast(
        self,
        name: &'static str,
        to: &'static str,
        get: impl Fn(&'a T) -> Option<Cow<'a, str>>,
    ) -> Self {
        self.push(name, |v| Data::Cast(v, to), get)
    }

    pub fn text(self, name: &'static str, get: impl Fn(&'a T) -> Option<&'a str>) -> Self {
        self.push(name, Data::Text, get)
    }

    pub fn bytes(self, name: &'static str, get: impl Fn(&'a T) -> Option<&'a [u8]>) -> Self {
        self.push(name, Data::Bytes, get)
    }

    pub fn int(self, name: &'static str, get: impl Fn(&'a T) -> Option<i32>) -> Self {
        self.push(name, Data::Int, get)
    }

    pub fn numeric(self, name: &'static str, get: impl Fn(&'a T) -> Option<Decimal>) -> Self {
        self.cast(name, "numeric", move |row| {
            get(row).map(|d| d.to_string().into())
        })
    }

    pub fn time(self, name: &'static str, get: impl Fn(&'a T) -> Option<DateTime<Utc>>) -> Self {
        self.push(name, Data::Time, get)
    }

    pub fn boolean(self, name: &'static str, get: impl Fn(&'a T) -> Option<bool>) -> Self {
        self.push(name, Data::Bool, get)
    }

    /// JSON text, stored as jsonb.
    pub fn jsonb(self, name: &'static str, get: impl Fn(&'a T) -> Option<Cow<'a, str>>) -> Self {
        self.cast(name, "jsonb", get)
    }

    pub fn text_array(
        self,
        name: &'static str,
        get: impl Fn(&'a T) -> Option<&'a [String]>,
    ) -> Self {
        self.cast(name, "text[]", move |row| {
            get(row).map(|a| array_literal(a).into())
        })
    }

    pub fn done(self) -> Vec<Column<'a>> {
        self.cols
    }
}

/// Binds each column's array, in order.
pub(super) fn bind<'q>(
    mut query: Query<'q, Postgres, PgArguments>,
    cols: Vec<Column<'q>>,
) -> Query<'q, Postgres, PgArguments> {
    for c in cols {
        query = match c.data {
            Data::Text(v) => query.bind(v),
            Data::Bytes(v) => query.bind(v),
            Data::Int(v) => query.bind(v),
            Data::Time(v) => query.bind(v),
            Data::Bool(v) => query.bind(v),
            Data::Cast(v, _) => query.bind(v),
        };
    }
    query
}

/// PostgreSQL's literal of a one-dimensional text array: every element quoted, with `"` and
/// `\` escaped, so that any text (commas, braces, spaces, `NULL`) reads back as itself.
fn array_literal(items: &[String]) -> String {
    let mut s = String::with_capacity(2 + items.iter().map(|i| i.len() + 3).sum::<usize>());
    s.push('{');
    for (n, item) in items.iter().enumerate() {
        if n > 0 {
            s.push(',');
        }
        s.push('"');
        for ch in item.chars() {
            if ch == '"' || ch == '\\' {
                s.push('\\');
            }
            s.push(ch);
        }
        s.push('"');
    }
    s.push('}');
    s
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn array_literal_quotes_every_element() {
        let items = [
            "a",
            "",
            "NULL",
            "x,y",
            "{b}",
            "say \"hi\"",
            "back\\slash",
            " sp ",
        ]
        .map(String::from);
        assert_eq!(
            array_literal(&items),
            r#"{"a","","NULL","x,y","{b}","say \"hi\"","back\\slash"," sp "}"#
        );
        assert_eq!(array_literal(&[]), "{}");
    }
}
