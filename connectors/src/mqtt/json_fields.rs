//! Reads the fields a source wants straight out of a JSON payload, without building a
//! `serde_json::Value` tree: a streaming visitor walks the objects, keeps the values at the
//! wanted paths (borrowing strings from the payload where it can) and skips the rest.
//!
//! Keys match exactly, or else ignoring ASCII case (an exact match wins).

use std::borrow::Cow;
use std::fmt;

use serde::Deserialize;
use serde::de::{self, DeserializeSeed, IgnoredAny, MapAccess, SeqAccess, Visitor};
use serde_json::Value;

use crate::columns::Number;

/// A value found at a wanted path.
#[derive(Debug, Clone, PartialEq)]
pub enum Scalar<'a> {
    /// `null`.
    Null,
    /// `true` or `false`.
    Bool(bool),
    /// A number.
    Number(Number),
    /// A string, borrowed from the payload unless it had escapes.
    Str(Cow<'a, str>),
    /// An object or array (kept whole, for text columns).
    Nested(Value),
}

/// The wanted paths as a tree: each level's keys, and the columns a path ends at.
#[derive(Debug, Default, Clone)]
pub struct Paths {
    children: Vec<(String, Paths)>,
    columns: Vec<usize>,
}

impl Paths {
    /// Paths of `columns`: `(column index, ["data", "temp"])`.
    pub fn new<'p>(columns: impl IntoIterator<Item = (usize, &'p [String])>) -> Paths {
        let mut root = Paths::default();
        for (column, path) in columns {
            let mut node = &mut root;
            for key in path {
                let at = match node.children.iter().position(|(k, _)| k == key) {
                    Some(i) => i,
                    None => {
                        node.children.push((key.clone(), Paths::default()));
                        node.children.len() - 1
                    }
                };
                node = &mut node.children[at].1;
            }
            node.columns.push(column);
        }
        root
    }

    /// The child for `key` and whether it matched exactly.
    fn child(&self, key: &str) -> Option<(&Paths, bool)> {
        if let Some((_, p)) = self.children.iter().find(|(k, _)| k == key) {
            return Some((p, true));
        }
        self.children
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(key))
            .map(|(_, p)| (p, false))
    }
}

/// Per column, the value found in the current object and whether every key on its path
/// matched exactly.
pub type Slots<'a> = Vec<Option<(Scalar<'a>, bool)>>;

fn put<'a>(slots: &mut Slots<'a>, columns: &[usize], value: &Scalar<'a>, exact: bool) {
    for &c in columns {
        let keep_old = matches!(&slots[c], Some((_, true))) && !exact;
        if !keep_old {
            slots[c] = Some((value.clone(), exact));
        }
    }
}

/// Fills `slots` from a `Value` (for a key that is both a wanted value and a parent of
/// wanted paths).
fn put_value<'a>(paths: &Paths, v: &Value, slots: &mut Slots<'a>, exact: bool) {
    put(slots, &paths.columns, &scalar_of(v), exact);
    if let Value::Object(obj) = v {
        for (k, child) in obj {
            if let Some((p, e)) = paths.child(k) {
                put_value(p, child, slots, exact && e);
            }
        }
    }
}

fn scalar_of(v: &Value) -> Scalar<'static> {
    match v {
        Value::Null => Scalar::Null,
        Value::Bool(b) => Scalar::Bool(*b),
        Value::Number(n) => Scalar::Number(match (n.as_i64(), n.as_u64()) {
            (Some(i), _) => Number::Int(i.into()),
            (_, Some(u)) => Number::Int(u.into()),
            _ => Number::Float(n.as_f64().unwrap_or(f64::NAN)),
        }),
        Value::String(s) => Scalar::Str(Cow::Owned(s.clone())),
        v => Scalar::Nested(v.clone()),
    }
}

/// Deserializes one scalar (or a nested value, kept whole).
struct ScalarSeed;

impl<'de> DeserializeSeed<'de> for ScalarSeed {
    type Value = Scalar<'de>;
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<Scalar<'de>, D::Error> {
        d.deserialize_any(ScalarVisitor)
    }
}

struct ScalarVisitor;

impl<'de> Visitor<'de> for ScalarVisitor {
    type Value = Scalar<'de>;
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_unit<E>(self) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Null)
    }
    fn visit_bool<E>(self, b: bool) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Bool(b))
    }
    fn visit_i64<E>(self, i: i64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(Number::Int(i.into())))
    }
    fn visit_u64<E>(self, u: u64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(Number::Int(u.into())))
    }
    fn visit_f64<E>(self, x: f64) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Number(Number::Float(x)))
    }
    fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Borrowed(s)))
    }
    fn visit_str<E>(self, s: &str) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(s.to_string())))
    }
    fn visit_string<E>(self, s: String) -> Result<Scalar<'de>, E> {
        Ok(Scalar::Str(Cow::Owned(s)))
    }
    fn visit_map<A: MapAccess<'de>>(self, map: A) -> Result<Scalar<'de>, A::Error> {
        let v = Value::deserialize(de::value::MapAccessDeserializer::new(map))?;
        Ok(Scalar::Nested(v))
    }
    fn visit_seq<A: SeqAccess<'de>>(self, seq: A) -> Result<Scalar<'de>, A::Error> {
        let v = Value::deserialize(de::value::SeqAccessDeserializer::new(seq))?;
        Ok(Scalar::Nested(v))
    }
}

/// An object key, borrowed from the payload unless it had escapes.
struct Key<'de>(Cow<'de, str>);

impl<'de> Deserialize<'de> for Key<'de> {
    fn deserialize<D: de::Deserializer<'de>>(d: D) -> Result<Key<'de>, D::Error> {
        struct KeyVisitor;
        impl<'de> Visitor<'de> for KeyVisitor {
            type Value = Key<'de>;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("an object key")
            }
            fn visit_borrowed_str<E>(self, s: &'de str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Borrowed(s)))
            }
            fn visit_str<E>(self, s: &str) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s.to_string())))
            }
            fn visit_string<E>(self, s: String) -> Result<Key<'de>, E> {
                Ok(Key(Cow::Owned(s)))
            }
        }
        d.deserialize_str(KeyVisitor)
    }
}

/// Walks the object at `paths` (anything else there is ignored), filling `slots`.
pub struct ObjectSeed<'p, 's, 'de> {
    /// The wanted paths below this object.
    pub paths: &'p Paths,
    /// Where found values go.
    pub slots: &'s mut Slots<'de>,
    /// Every key so far matched exactly.
    pub exact: bool,
}

impl<'de> DeserializeSeed<'de> for ObjectSeed<'_, '_, 'de> {
    type Value = ();
    fn deserialize<D: de::Deserializer<'de>>(self, d: D) -> Result<(), D::Error> {
        d.deserialize_any(self)
    }
}

impl<'de> Visitor<'de> for ObjectSeed<'_, '_, 'de> {
    type Value = ();
    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a JSON value")
    }
    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<(), A::Error> {
        while let Some(Key(key)) = map.next_key::<Key<'de>>()? {
            let Some((child, exact)) = self.paths.child(&key) else {
                map.next_value::<IgnoredAny>()?;
                continue;
            };
            let exact = self.exact && exact;
            match (child.columns.is_empty(), child.children.is_empty()) {
                (false, true) => {
                    let v = map.next_value_seed(ScalarSeed)?;
                    put(self.slots, &child.columns, &v, exact);
                }
                (true, false) => map.next_value_seed(ObjectSeed {
                    paths: child,
                    slots: &mut *self.slots,
                    exact,
                })?,
                _ => {
                    let v = map.next_value::<Value>()?;
                    put_value(child, &v, self.slots, exact);
                }
            }
        }
        Ok(())
    }
    // a scalar or array where an object was expected: its paths have no value
    fn visit_seq<A: SeqAccess<'de>>(self, mut seq: A) -> Result<(), A::Error> {
        while seq.next_element::<IgnoredAny>()?.is_some() {}
        Ok(())
    }
    fn visit_unit<E>(self) -> Result<(), E> {
        Ok(())
    }
    fn visit_bool<E>(self, _: bool) -> Result<(), E> {
        Ok(())
    }
    fn visit_i64<E>(self, _: i64) -> Result<(), E> {
        Ok(())
    }
    fn visit_u64<E>(self, _: u64) -> Result<(), E> {
        Ok(())
    }
    fn visit_f64<E>(self, _: f64) -> Result<(), E> {
        Ok(())
    }
    fn visit_str<E>(self, _: &str) -> Result<(), E> {
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn extract<'a>(paths: &Paths, n: usize, json: &'a str) -> Slots<'a> {
        let mut slots: Slots<'a> = vec![None; n];
        let mut de = serde_json::Deserializer::from_str(json);
        ObjectSeed {
            paths,
            slots: &mut slots,
            exact: true,
        }
        .deserialize(&mut de)
        .unwrap();
        de.end().unwrap();
        slots
    }

    #[test]
    fn finds_nested_and_case_insensitive_keys() {
        let p = |s: &str| s.split('.').map(str::to_string).collect::<Vec<_>>();
        let paths = [p("machine"), p("data.temp"), p("data"), p("ts")];
        let tree = Paths::new(paths.iter().enumerate().map(|(i, v)| (i, v.as_slice())));
        let s = extract(
            &tree,
            4,
            r#"{"Machine":"M\u0031","skip":[1,{"a":2}],"data":{"temp":20.5,"x":1},"TS":1,"ts":2}"#,
        );
        assert_eq!(s[0], Some((Scalar::Str(Cow::Owned("M1".into())), false)));
        assert_eq!(s[1], Some((Scalar::Number(Number::Float(20.5)), true)));
        assert!(matches!(&s[2], Some((Scalar::Nested(_), true))));
        // the exact key wins over the earlier case-insensitive one
        assert_eq!(s[3], Some((Scalar::Number(Number::Int(2)), true)));
        let s = extract(&tree, 4, r#"{"data":5,"ts":"2026-01-01T00:00:00Z"}"#);
        assert!(s[1].is_none());
        assert!(matches!(&s[3], Some((Scalar::Str(Cow::Borrowed(_)), true))));
    }
}
