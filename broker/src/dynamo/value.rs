//! DynamoDB's attribute values (`{"S": "x"}`, `{"N": "1"}`, ...) and what expressions do with
//! them: compare, add, and read or change a document path.

use super::DynamoError;
use serde::{Deserialize, Serialize};
use std::cmp::Ordering;
use std::collections::BTreeMap;
use streamfabric_api::types::Blob;

/// An item: attribute name -> value.
pub type Item = BTreeMap<String, AttributeValue>;

#[derive(Debug, Clone, Serialize, Deserialize)]
pub enum AttributeValue {
    S(String),
    N(String),
    B(Blob),
    SS(Vec<String>),
    NS(Vec<String>),
    BS(Vec<Blob>),
    M(BTreeMap<String, AttributeValue>),
    L(Vec<AttributeValue>),
    BOOL(bool),
    NULL(bool),
}

impl AttributeValue {
    /// The type's name as DynamoDB writes it (`attribute_type`, error messages).
    pub fn type_name(&self) -> &'static str {
        match self {
            AttributeValue::S(_) => "S",
            AttributeValue::N(_) => "N",
            AttributeValue::B(_) => "B",
            AttributeValue::SS(_) => "SS",
            AttributeValue::NS(_) => "NS",
            AttributeValue::BS(_) => "BS",
            AttributeValue::M(_) => "M",
            AttributeValue::L(_) => "L",
            AttributeValue::BOOL(_) => "BOOL",
            AttributeValue::NULL(_) => "NULL",
        }
    }

    /// Checked as DynamoDB checks input values: numbers parse, sets are non-empty and
    /// without duplicates, NULL is true; recursively.
    pub fn validate(&self) -> Result<(), DynamoError> {
        let invalid =
            |m: String| Err(DynamoError::validation(format!("One or more parameter values were invalid: {m}")));
        match self {
            AttributeValue::N(n) => Number::parse(n).map(|_| ()),
            AttributeValue::SS(v) | AttributeValue::NS(v) if v.is_empty() => invalid(format!(
                "An {} set  may not be empty",
                if matches!(self, AttributeValue::SS(_)) { "string" } else { "number" }
            )),
            AttributeValue::BS(v) if v.is_empty() => invalid("An binary set  may not be empty".into()),
            AttributeValue::SS(v) => no_duplicates(v.iter().cloned()),
            AttributeValue::NS(v) => {
                let parsed = v.iter().map(|n| Number::parse(n)).collect::<Result<Vec<_>, _>>()?;
                no_duplicates(parsed.iter().map(Number::canonical))
            }
            AttributeValue::BS(v) => no_duplicates(v.iter().map(|b| b.0.to_vec())),
            AttributeValue::M(m) => m.values().try_for_each(AttributeValue::validate),
            AttributeValue::L(l) => l.iter().try_for_each(AttributeValue::validate),
            AttributeValue::NULL(false) => invalid("Null attribute value types must have the value of true".into()),
            _ => Ok(()),
        }
    }

    /// DynamoDB's `=`: same type and value (numbers by value, sets in any order).
    pub fn same(&self, other: &AttributeValue) -> bool {
        use AttributeValue::*;
        match (self, other) {
            (S(a), S(b)) => a == b,
            (N(a), N(b)) => numbers_equal(a, b),
            (B(a), B(b)) => a.0 == b.0,
            (BOOL(a), BOOL(b)) => a == b,
            (NULL(_), NULL(_)) => true,
            (SS(a), SS(b)) => sorted(a.clone()) == sorted(b.clone()),
            (NS(a), NS(b)) => a.len() == b.len() && a.iter().all(|x| b.iter().any(|y| numbers_equal(x, y))),
            (BS(a), BS(b)) => {
                sorted(a.iter().map(|x| x.0.to_vec()).collect()) == sorted(b.iter().map(|x| x.0.to_vec()).collect())
            }
            (L(a), L(b)) => a.len() == b.len() && a.iter().zip(b).all(|(x, y)| x.same(y)),
            (M(a), M(b)) => a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| v.same(w))),
            _ => false,
        }
    }

    /// `<`, `<=`, `>`, `>=` and BETWEEN: between two numbers, two strings or two binaries;
    /// None for any other pair (the comparison is then false).
    pub fn order(&self, other: &AttributeValue) -> Option<Ordering> {
        use AttributeValue::*;
        match (self, other) {
            (N(a), N(b)) => Some(Number::parse(a).ok()?.cmp(&Number::parse(b).ok()?)),
            (S(a), S(b)) => Some(a.as_bytes().cmp(b.as_bytes())),
            (B(a), B(b)) => Some(a.0.cmp(&b.0)),
            _ => None,
        }
    }

    /// `size(path)`: characters of a string (UTF-8 bytes, as DynamoDB counts), bytes of a
    /// binary, elements of a set, list or map.
    pub fn size(&self) -> Option<usize> {
        use AttributeValue::*;
        match self {
            S(s) => Some(s.len()),
            B(b) => Some(b.0.len()),
            SS(v) | NS(v) => Some(v.len()),
            BS(v) => Some(v.len()),
            L(v) => Some(v.len()),
            M(m) => Some(m.len()),
            _ => None,
        }
    }

    /// `contains(path, operand)`: a substring of a string, an element of a set or list.
    pub fn contains(&self, operand: &AttributeValue) -> bool {
        use AttributeValue::*;
        match (self, operand) {
            (S(s), S(sub)) => s.contains(sub.as_str()),
            (B(b), B(sub)) => sub.0.is_empty() || b.0.windows(sub.0.len()).any(|w| w == &sub.0[..]),
            (SS(v), S(x)) => v.contains(x),
            (NS(v), N(x)) => v.iter().any(|n| numbers_equal(n, x)),
            (BS(v), B(x)) => v.iter().any(|b| b.0 == x.0),
            (L(v), x) => v.iter().any(|e| e.same(x)),
            _ => false,
        }
    }

    pub fn begins_with(&self, prefix: &AttributeValue) -> bool {
        match (self, prefix) {
            (AttributeValue::S(s), AttributeValue::S(p)) => s.starts_with(p.as_str()),
            (AttributeValue::B(b), AttributeValue::B(p)) => b.0.starts_with(&p.0),
            _ => false,
        }
    }
}

fn sorted<T: Ord>(mut v: Vec<T>) -> Vec<T> {
    v.sort();
    v
}

fn no_duplicates<T: Ord + std::fmt::Debug>(values: impl Iterator<Item = T>) -> Result<(), DynamoError> {
    let all: Vec<T> = values.collect();
    let unique: std::collections::BTreeSet<&T> = all.iter().collect();
    if unique.len() != all.len() {
        return Err(DynamoError::validation(format!("Input collection {all:?} contains duplicates.")));
    }
    Ok(())
}

fn numbers_equal(a: &str, b: &str) -> bool {
    matches!((Number::parse(a), Number::parse(b)), (Ok(x), Ok(y)) if x == y)
}

/// A DynamoDB number: up to 38 significant digits, exactly (`mantissa` x 10^-`scale`,
/// without trailing zeros in the mantissa).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Number {
    mantissa: i128,
    scale: i32,
}

impl Number {
    pub fn parse(text: &str) -> Result<Number, DynamoError> {
        let bad = || DynamoError::validation(format!("The parameter cannot be converted to a numeric value: {text}"));
        let t = text.trim();
        let (negative, t) = match t.as_bytes().first() {
            Some(b'-') => (true, &t[1..]),
            Some(b'+') => (false, &t[1..]),
            _ => (false, t),
        };
        let (body, exponent) = match t.find(['e', 'E']) {
            Some(i) => (&t[..i], t[i + 1..].parse::<i32>().map_err(|_| bad())?),
            None => (t, 0),
        };
        let (whole, fraction) = body.split_once('.').unwrap_or((body, ""));
        if (whole.is_empty() && fraction.is_empty())
            || !whole.bytes().chain(fraction.bytes()).all(|b| b.is_ascii_digit())
        {
            return Err(bad());
        }
        let digits = format!("{whole}{fraction}");
        let digits = digits.trim_start_matches('0');
        if digits.len() > 38 {
            return Err(DynamoError::validation(format!(
                "Attempting to store more than 38 significant digits in a Number: {text}"
            )));
        }
        let mantissa: i128 = if digits.is_empty() { 0 } else { digits.parse().map_err(|_| bad())? };
        let scale = fraction.len() as i32 - exponent;
        Ok(Number::normal(if negative { -mantissa } else { mantissa }, scale))
    }

    fn normal(mut mantissa: i128, mut scale: i32) -> Number {
        if mantissa == 0 {
            return Number { mantissa: 0, scale: 0 };
        }
        while mantissa % 10 == 0 {
            mantissa /= 10;
            scale -= 1;
        }
        Number { mantissa, scale }
    }

    /// Both at one scale, if that fits.
    fn aligned(self, other: Number) -> Option<(i128, i128, i32)> {
        let scale = self.scale.max(other.scale);
        let lift = |n: Number| 10i128.checked_pow((scale - n.scale) as u32).and_then(|f| n.mantissa.checked_mul(f));
        Some((lift(self)?, lift(other)?, scale))
    }

    pub fn plus(self, other: Number) -> Result<Number, DynamoError> {
        let overflow = || {
            DynamoError::validation(
                "Number overflow. Attempting to store a number with magnitude larger than supported range",
            )
        };
        let (a, b, scale) = self.aligned(other).ok_or_else(overflow)?;
        Ok(Number::normal(a.checked_add(b).ok_or_else(overflow)?, scale))
    }

    pub fn negate(self) -> Number {
        Number { mantissa: -self.mantissa, scale: self.scale }
    }

    /// The shortest decimal form (what DynamoDB answers for computed numbers).
    pub fn canonical(&self) -> String {
        let negative = self.mantissa < 0;
        let digits = self.mantissa.unsigned_abs().to_string();
        let body = if self.scale <= 0 {
            format!("{digits}{}", "0".repeat(-self.scale as usize))
        } else if (self.scale as usize) < digits.len() {
            let point = digits.len() - self.scale as usize;
            format!("{}.{}", &digits[..point], &digits[point..])
        } else {
            format!("0.{}{digits}", "0".repeat(self.scale as usize - digits.len()))
        };
        if negative { format!("-{body}") } else { body }
    }
}

impl PartialOrd for Number {
    fn partial_cmp(&self, other: &Self) -> Option<Ordering> {
        Some(self.cmp(other))
    }
}

impl Ord for Number {
    fn cmp(&self, other: &Self) -> Ordering {
        match self.aligned(*other) {
            Some((a, b, _)) => a.cmp(&b),
            // Scales too far apart to align exactly: the floating-point values order them.
            None => {
                let f = |n: &Number| n.mantissa as f64 * 10f64.powi(-n.scale);
                f(self).partial_cmp(&f(other)).unwrap_or(Ordering::Equal)
            }
        }
    }
}

/// One step of a document path: an attribute or map key, or a list index.
#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Key(String),
    Index(usize),
}

/// The value at `path` in `item`, if there is one.
pub fn get<'a>(item: &'a Item, path: &[Step]) -> Option<&'a AttributeValue> {
    let (Step::Key(first), rest) = path.split_first()? else { return None };
    let mut value = item.get(first)?;
    for step in rest {
        value = match (step, value) {
            (Step::Key(k), AttributeValue::M(m)) => m.get(k)?,
            (Step::Index(i), AttributeValue::L(l)) => l.get(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

/// Set the value at `path`: its parent must exist (a map or a list; an index past a list's
/// end appends).
pub fn set(item: &mut Item, path: &[Step], value: AttributeValue) -> Result<(), DynamoError> {
    let invalid =
        || DynamoError::validation("The document path provided in the update expression is invalid for update");
    let Some((last, parents)) = path.split_last() else { return Err(invalid()) };
    if parents.is_empty() {
        let Step::Key(name) = last else { return Err(invalid()) };
        item.insert(name.clone(), value);
        return Ok(());
    }
    let parent = get_mut(item, parents).ok_or_else(invalid)?;
    match (last, parent) {
        (Step::Key(k), AttributeValue::M(m)) => {
            m.insert(k.clone(), value);
        }
        (Step::Index(i), AttributeValue::L(l)) => {
            if *i < l.len() {
                l[*i] = value;
            } else {
                l.push(value);
            }
        }
        _ => return Err(invalid()),
    }
    Ok(())
}

/// Remove what is at `path` (nothing if there is nothing).
pub fn remove(item: &mut Item, path: &[Step]) {
    let Some((last, parents)) = path.split_last() else { return };
    if parents.is_empty() {
        if let Step::Key(name) = last {
            item.remove(name);
        }
        return;
    }
    match (last, get_mut(item, parents)) {
        (Step::Key(k), Some(AttributeValue::M(m))) => {
            m.remove(k);
        }
        (Step::Index(i), Some(AttributeValue::L(l))) if *i < l.len() => {
            l.remove(*i);
        }
        _ => {}
    }
}

fn get_mut<'a>(item: &'a mut Item, path: &[Step]) -> Option<&'a mut AttributeValue> {
    let (Step::Key(first), rest) = path.split_first()? else { return None };
    let mut value = item.get_mut(first)?;
    for step in rest {
        value = match (step, value) {
            (Step::Key(k), AttributeValue::M(m)) => m.get_mut(k)?,
            (Step::Index(i), AttributeValue::L(l)) => l.get_mut(*i)?,
            _ => return None,
        };
    }
    Some(value)
}

/// ADD: a number to a number (a missing attribute counts as 0), a set's elements to a set
/// of the same type (a missing attribute as the empty set).
pub fn add(current: Option<&AttributeValue>, operand: &AttributeValue) -> Result<AttributeValue, DynamoError> {
    use AttributeValue::*;
    let mismatch = || {
        DynamoError::validation(
            "An operand in the update expression has an incorrect data type: ADD takes a number or a set of the attribute's type",
        )
    };
    Ok(match (current, operand) {
        (None, N(_) | SS(_) | NS(_) | BS(_)) => operand.clone(),
        (Some(N(a)), N(b)) => N(Number::parse(a)?.plus(Number::parse(b)?)?.canonical()),
        (Some(SS(a)), SS(b)) => SS(union(a, b, |x, y| x == y)),
        (Some(NS(a)), NS(b)) => NS(union(a, b, |x, y| numbers_equal(x, y))),
        (Some(BS(a)), BS(b)) => BS(union(a, b, |x, y| x.0 == y.0)),
        _ => return Err(mismatch()),
    })
}

/// DELETE: a set's elements from a set of the same type; None once the set is empty (the
/// attribute goes, as DynamoDB keeps no empty sets).
pub fn delete_from(
    current: Option<&AttributeValue>,
    operand: &AttributeValue,
) -> Result<Option<AttributeValue>, DynamoError> {
    use AttributeValue::*;
    let left = match (current, operand) {
        (None, SS(_) | NS(_) | BS(_)) => return Ok(None),
        (Some(SS(a)), SS(b)) => SS(a.iter().filter(|x| !b.contains(x)).cloned().collect()),
        (Some(NS(a)), NS(b)) => NS(a.iter().filter(|x| !b.iter().any(|y| numbers_equal(x, y))).cloned().collect()),
        (Some(BS(a)), BS(b)) => BS(a.iter().filter(|x| !b.iter().any(|y| y.0 == x.0)).cloned().collect()),
        _ => {
            return Err(DynamoError::validation(
                "An operand in the update expression has an incorrect data type: DELETE takes a set of the attribute's type",
            ));
        }
    };
    Ok((left.size() != Some(0)).then_some(left))
}

fn union<T: Clone>(a: &[T], b: &[T], same: impl Fn(&T, &T) -> bool) -> Vec<T> {
    let mut out = a.to_vec();
    for x in b {
        if !out.iter().any(|y| same(x, y)) {
            out.push(x.clone());
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn n(s: &str) -> Number {
        Number::parse(s).unwrap()
    }

    #[test]
    fn numbers_compare_and_add_exactly() {
        assert_eq!(n("1.50"), n("1.5"));
        assert_eq!(n("1e3"), n("1000"));
        assert!(n("-2") < n("1.5"));
        assert!(n("0.1") < n("0.11"));
        assert_eq!(n("0.1").plus(n("0.2")).unwrap().canonical(), "0.3");
        assert_eq!(n("9").plus(n("1")).unwrap().canonical(), "10");
        assert_eq!(n("-5").plus(n("2.25")).unwrap().canonical(), "-2.75");
        assert_eq!(n("0.001").canonical(), "0.001");
        assert!(Number::parse("1.2.3").is_err());
        assert!(Number::parse("").is_err());
        assert!(Number::parse(&"9".repeat(39)).is_err());
    }

    #[test]
    fn paths_read_set_and_remove_nested_values() {
        let mut item: Item = serde_json::from_str(r#"{"a": {"M": {"b": {"L": [{"S": "x"}]}}}}"#).unwrap();
        let path = [Step::Key("a".into()), Step::Key("b".into()), Step::Index(0)];
        assert!(get(&item, &path).unwrap().same(&AttributeValue::S("x".into())));
        set(&mut item, &[Step::Key("a".into()), Step::Key("c".into())], AttributeValue::N("1".into())).unwrap();
        assert!(get(&item, &[Step::Key("a".into()), Step::Key("c".into())]).is_some());
        assert!(
            set(&mut item, &[Step::Key("nope".into()), Step::Key("c".into())], AttributeValue::BOOL(true)).is_err()
        );
        remove(&mut item, &path);
        assert!(get(&item, &path).is_none());
    }

    #[test]
    fn sets_add_and_delete_like_dynamodb() {
        let ss = |v: &[&str]| AttributeValue::SS(v.iter().map(|s| s.to_string()).collect());
        let added = add(Some(&ss(&["a"])), &ss(&["a", "b"])).unwrap();
        assert!(added.same(&ss(&["b", "a"])));
        assert!(delete_from(Some(&added), &ss(&["a", "b"])).unwrap().is_none(), "an emptied set goes");
        assert!(add(Some(&AttributeValue::S("x".into())), &AttributeValue::N("1".into())).is_err());
        assert!(ss(&["a", "a"]).validate().is_err());
        assert!(AttributeValue::SS(vec![]).validate().is_err());
    }
}
