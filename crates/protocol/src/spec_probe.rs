//! Which field names an inbound parser reads: a serde deserializer that records, for every
//! struct a wire type is made of, the names it asks for, by path (`shipment.items[]`). The
//! spec tests compare them with the specification's, so a parser cannot read a name the
//! specification does not have without a test saying so.

use std::cell::RefCell;
use std::collections::BTreeMap;

use serde::de::{self, DeserializeSeed, Deserializer, MapAccess, SeqAccess, Visitor};
use serde::forward_to_deserialize_any;

/// The struct fields a wire type reads, by path from the params (`""` is the params).
pub type Fields = BTreeMap<String, Vec<&'static str>>;

/// Records the fields `T` reads.
pub fn fields<T: for<'de> serde::Deserialize<'de>>() -> Fields {
    let out = RefCell::new(Fields::new());
    // A value the probe cannot be (a number where a struct belongs) ends the walk under it;
    // the names of every struct entered are recorded before that.
    let _ = T::deserialize(Probe {
        path: String::new(),
        out: &out,
    });
    out.into_inner()
}

#[derive(Debug)]
struct Error(String);

impl std::fmt::Display for Error {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for Error {}

impl de::Error for Error {
    fn custom<T: std::fmt::Display>(msg: T) -> Self {
        Error(msg.to_string())
    }
}

struct Probe<'a> {
    path: String,
    out: &'a RefCell<Fields>,
}

impl<'de> Deserializer<'de> for Probe<'_> {
    type Error = Error;

    /// A scalar: a text, which every lenient reader takes.
    fn deserialize_any<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_str("1")
    }

    fn deserialize_bool<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_bool(true)
    }

    fn deserialize_option<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_some(self)
    }

    fn deserialize_seq<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        visitor.visit_seq(OneElement {
            probe: Some(Probe {
                path: format!("{}[]", self.path),
                out: self.out,
            }),
        })
    }

    fn deserialize_map<V: Visitor<'de>>(self, visitor: V) -> Result<V::Value, Error> {
        // A free-form map (an address kept as sent): no names to check.
        visitor.visit_map(StructFields {
            names: [].iter(),
            path: self.path,
            out: self.out,
        })
    }

    fn deserialize_struct<V: Visitor<'de>>(
        self,
        _name: &'static str,
        fields: &'static [&'static str],
        visitor: V,
    ) -> Result<V::Value, Error> {
        self.out
            .borrow_mut()
            .insert(self.path.clone(), fields.to_vec());
        visitor.visit_map(StructFields {
            names: fields.iter(),
            path: self.path,
            out: self.out,
        })
    }

    forward_to_deserialize_any! {
        i8 i16 i32 i64 i128 u8 u16 u32 u64 u128 f32 f64 char str string bytes byte_buf unit
        unit_struct newtype_struct tuple tuple_struct enum identifier ignored_any
    }
}

/// The fields of a struct, one after the other, each with a probe at its path.
struct StructFields<'a> {
    names: std::slice::Iter<'static, &'static str>,
    path: String,
    out: &'a RefCell<Fields>,
}

impl<'de> MapAccess<'de> for StructFields<'_> {
    type Error = Error;

    fn next_key_seed<K: DeserializeSeed<'de>>(
        &mut self,
        seed: K,
    ) -> Result<Option<K::Value>, Error> {
        match self.names.as_slice().first() {
            None => Ok(None),
            Some(name) => seed
                .deserialize(de::value::StrDeserializer::<Error>::new(name))
                .map(Some),
        }
    }

    fn next_value_seed<V: DeserializeSeed<'de>>(&mut self, seed: V) -> Result<V::Value, Error> {
        let name = *self.names.next().expect("a value follows its key");
        let path = if self.path.is_empty() {
            name.to_owned()
        } else {
            format!("{}.{name}", self.path)
        };
        seed.deserialize(Probe {
            path,
            out: self.out,
        })
    }
}

/// A list of one element.
struct OneElement<'a> {
    probe: Option<Probe<'a>>,
}

impl<'de> SeqAccess<'de> for OneElement<'_> {
    type Error = Error;

    fn next_element_seed<T: DeserializeSeed<'de>>(
        &mut self,
        seed: T,
    ) -> Result<Option<T::Value>, Error> {
        match self.probe.take() {
            Some(probe) => seed.deserialize(probe).map(Some),
            None => Ok(None),
        }
    }
}
