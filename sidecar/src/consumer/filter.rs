//! The filter expressions of `--sample-filter`: a record is delivered when the expression
//! holds for its data, read as JSON.
//!
//! ```text
//! expr    := and ( "||" and )*
//! and     := unary ( "&&" unary )*
//! unary   := "!" unary | compare
//! compare := value ( ("==" | "!=" | "<" | "<=" | ">" | ">=") value )?
//! value   := "(" expr ")" | "has(" path ")" | number | "string" | true | false | null | path
//! path    := name ( "." name | "[" index "]" )*      e.g. order.items[0].sku
//! ```
//!
//! A path names a field of the record's JSON (a missing one is `null`; `has(path)` tells it
//! is there). `==` and `!=` compare any JSON values (numbers by value); `<`, `<=`, `>`, `>=`
//! compare two numbers or two strings and are false otherwise. A lone value holds when it
//! is `true`, a number other than 0, a non-empty string, array or object. Data that is not
//! JSON matches no filter.

use serde_json::Value;
use std::cmp::Ordering;

#[derive(Debug, Clone, PartialEq)]
pub enum Filter {
    Or(Box<Filter>, Box<Filter>),
    And(Box<Filter>, Box<Filter>),
    Not(Box<Filter>),
    Compare(Operand, Op, Operand),
    Truthy(Operand),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Operand {
    Literal(Value),
    Path(Vec<Step>),
    Has(Vec<Step>),
    Nested(Box<Filter>),
}

#[derive(Debug, Clone, PartialEq)]
pub enum Step {
    Field(String),
    Index(usize),
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Op {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

impl Filter {
    pub fn parse(text: &str) -> Result<Filter, String> {
        let mut p = Parser { chars: text.char_indices().collect(), at: 0, text };
        let filter = p.or()?;
        p.skip_space();
        if p.at < p.chars.len() {
            return Err(p.error("an operator or the end of the expression"));
        }
        Ok(filter)
    }

    /// Whether `data` (a record's JSON) passes.
    pub fn matches(&self, data: &Value) -> bool {
        match self {
            Filter::Or(a, b) => a.matches(data) || b.matches(data),
            Filter::And(a, b) => a.matches(data) && b.matches(data),
            Filter::Not(a) => !a.matches(data),
            Filter::Truthy(v) => truthy(&v.value(data)),
            Filter::Compare(a, op, b) => {
                let (a, b) = (a.value(data), b.value(data));
                match op {
                    Op::Eq => equal(&a, &b),
                    Op::Ne => !equal(&a, &b),
                    Op::Lt => order(&a, &b) == Some(Ordering::Less),
                    Op::Le => matches!(order(&a, &b), Some(Ordering::Less | Ordering::Equal)),
                    Op::Gt => order(&a, &b) == Some(Ordering::Greater),
                    Op::Ge => matches!(order(&a, &b), Some(Ordering::Greater | Ordering::Equal)),
                }
            }
        }
    }
}

impl Operand {
    fn value(&self, data: &Value) -> Value {
        match self {
            Operand::Literal(v) => v.clone(),
            Operand::Path(steps) => lookup(data, steps).cloned().unwrap_or(Value::Null),
            Operand::Has(steps) => Value::Bool(lookup(data, steps).is_some()),
            Operand::Nested(f) => Value::Bool(f.matches(data)),
        }
    }
}

fn lookup<'a>(data: &'a Value, steps: &[Step]) -> Option<&'a Value> {
    steps.iter().try_fold(data, |v, step| match step {
        Step::Field(name) => v.get(name),
        Step::Index(i) => v.get(*i),
    })
}

fn equal(a: &Value, b: &Value) -> bool {
    match (a.as_f64(), b.as_f64()) {
        (Some(x), Some(y)) => x == y,
        _ => a == b,
    }
}

fn order(a: &Value, b: &Value) -> Option<Ordering> {
    match (a, b) {
        (Value::Number(x), Value::Number(y)) => x.as_f64()?.partial_cmp(&y.as_f64()?),
        (Value::String(x), Value::String(y)) => Some(x.cmp(y)),
        _ => None,
    }
}

fn truthy(v: &Value) -> bool {
    match v {
        Value::Null => false,
        Value::Bool(b) => *b,
        Value::Number(n) => n.as_f64() != Some(0.0),
        Value::String(s) => !s.is_empty(),
        Value::Array(a) => !a.is_empty(),
        Value::Object(o) => !o.is_empty(),
    }
}

struct Parser<'a> {
    chars: Vec<(usize, char)>,
    at: usize,
    text: &'a str,
}

impl Parser<'_> {
    fn peek(&self) -> Option<char> {
        self.chars.get(self.at).map(|(_, c)| *c)
    }

    fn skip_space(&mut self) {
        while self.peek().is_some_and(char::is_whitespace) {
            self.at += 1;
        }
    }

    /// Consume `token` if it comes next (after spaces).
    fn eat(&mut self, token: &str) -> bool {
        self.skip_space();
        let n = token.chars().count();
        let next: String = self.chars[self.at..].iter().take(n).map(|(_, c)| c).collect();
        if next == token {
            self.at += n;
            true
        } else {
            false
        }
    }

    fn error(&self, expected: &str) -> String {
        let offset = self.chars.get(self.at).map_or(self.text.len(), |(i, _)| *i);
        format!("filter {:?}: expected {expected} at character {}", self.text, offset + 1)
    }

    fn or(&mut self) -> Result<Filter, String> {
        let mut left = self.and()?;
        while self.eat("||") {
            left = Filter::Or(Box::new(left), Box::new(self.and()?));
        }
        Ok(left)
    }

    fn and(&mut self) -> Result<Filter, String> {
        let mut left = self.unary()?;
        while self.eat("&&") {
            left = Filter::And(Box::new(left), Box::new(self.unary()?));
        }
        Ok(left)
    }

    fn unary(&mut self) -> Result<Filter, String> {
        self.skip_space();
        if self.peek() == Some('!') && self.chars.get(self.at + 1).map(|(_, c)| *c) != Some('=') {
            self.at += 1;
            return Ok(Filter::Not(Box::new(self.unary()?)));
        }
        let left = self.operand()?;
        // Two-character operators first.
        for (token, op) in
            [("==", Op::Eq), ("!=", Op::Ne), ("<=", Op::Le), (">=", Op::Ge), ("<", Op::Lt), (">", Op::Gt)]
        {
            if self.eat(token) {
                return Ok(Filter::Compare(left, op, self.operand()?));
            }
        }
        Ok(Filter::Truthy(left))
    }

    fn operand(&mut self) -> Result<Operand, String> {
        self.skip_space();
        if self.eat("(") {
            let inner = self.or()?;
            if !self.eat(")") {
                return Err(self.error("')'"));
            }
            return Ok(Operand::Nested(Box::new(inner)));
        }
        match self.peek() {
            Some('"') => self.string().map(|s| Operand::Literal(Value::String(s))),
            Some(c) if c == '-' || c.is_ascii_digit() => self.number(),
            Some(c) if c.is_alphabetic() || c == '_' => {
                let name = self.name();
                match name.as_str() {
                    "true" => Ok(Operand::Literal(Value::Bool(true))),
                    "false" => Ok(Operand::Literal(Value::Bool(false))),
                    "null" => Ok(Operand::Literal(Value::Null)),
                    "has" if self.eat("(") => {
                        self.skip_space();
                        let first = self.name();
                        if first.is_empty() {
                            return Err(self.error("a field name"));
                        }
                        let path = self.path(first)?;
                        if !self.eat(")") {
                            return Err(self.error("')'"));
                        }
                        Ok(Operand::Has(path))
                    }
                    _ => Ok(Operand::Path(self.path(name)?)),
                }
            }
            _ => Err(self.error("a value: a field, a number, a \"string\", true, false, null or has(field)")),
        }
    }

    fn name(&mut self) -> String {
        let mut name = String::new();
        while let Some(c) = self.peek().filter(|c| c.is_alphanumeric() || *c == '_' || *c == '-') {
            name.push(c);
            self.at += 1;
        }
        name
    }

    fn path(&mut self, first: String) -> Result<Vec<Step>, String> {
        let mut steps = vec![Step::Field(first)];
        loop {
            if self.peek() == Some('.') {
                self.at += 1;
                let name = self.name();
                if name.is_empty() {
                    return Err(self.error("a field name after '.'"));
                }
                steps.push(Step::Field(name));
            } else if self.peek() == Some('[') {
                self.at += 1;
                let digits: String = std::iter::from_fn(|| {
                    let c = self.peek().filter(char::is_ascii_digit)?;
                    self.at += 1;
                    Some(c)
                })
                .collect();
                if digits.is_empty() || self.peek() != Some(']') {
                    return Err(self.error("an index such as [0]"));
                }
                self.at += 1;
                steps.push(Step::Index(digits.parse().map_err(|_| self.error("a smaller index"))?));
            } else {
                return Ok(steps);
            }
        }
    }

    fn string(&mut self) -> Result<String, String> {
        self.at += 1; // the opening quote
        let mut out = String::new();
        loop {
            match self.peek() {
                None => return Err(self.error("a closing '\"'")),
                Some('"') => {
                    self.at += 1;
                    return Ok(out);
                }
                Some('\\') => {
                    self.at += 1;
                    match self.peek() {
                        Some(c @ ('"' | '\\')) => out.push(c),
                        Some('n') => out.push('\n'),
                        Some('t') => out.push('\t'),
                        _ => return Err(self.error("an escape: \\\", \\\\, \\n or \\t")),
                    }
                    self.at += 1;
                }
                Some(c) => {
                    out.push(c);
                    self.at += 1;
                }
            }
        }
    }

    fn number(&mut self) -> Result<Operand, String> {
        let start = self.at;
        while self.peek().is_some_and(|c| c.is_ascii_digit() || matches!(c, '-' | '+' | '.' | 'e' | 'E')) {
            self.at += 1;
        }
        let text: String = self.chars[start..self.at].iter().map(|(_, c)| c).collect();
        let value: Value = serde_json::from_str(&text).map_err(|_| {
            self.at = start;
            self.error("a number")
        })?;
        Ok(Operand::Literal(value))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn holds(filter: &str, data: Value) -> bool {
        Filter::parse(filter).unwrap_or_else(|e| panic!("{e}")).matches(&data)
    }

    #[test]
    fn comparisons_paths_and_logic() {
        let order = json!({"kind": "refund", "amount": 120.5, "customer": {"country": "FR", "tags": ["vip", "new"]}});
        assert!(holds(r#"kind == "refund""#, order.clone()));
        assert!(holds("amount > 100 && amount <= 120.5", order.clone()));
        assert!(holds(r#"customer.country == "FR" || amount < 0"#, order.clone()));
        assert!(holds(r#"customer.tags[1] == "new""#, order.clone()));
        assert!(holds("!(amount < 100)", order.clone()));
        assert!(holds("has(customer.tags) && !has(customer.email)", order.clone()));
        assert!(holds("missing == null", order.clone()));
        assert!(!holds("amount > \"100\"", order.clone()), "a number and a string do not order");
        assert!(holds("amount != 3", order.clone()));
        assert!(holds("customer.tags", order.clone()), "a non-empty array holds");
        assert!(!holds("customer.email", order.clone()));
        assert!(holds(r#"kind == "a" || kind == "refund" && amount > 100"#, order.clone()), "&& binds tighter");
        assert!(holds("1 == 1.0", json!(null)));
        assert!(holds(r#""say \"hi\"" == quote"#, json!({"quote": "say \"hi\""})));
    }

    #[test]
    fn bad_expressions_say_where() {
        for (bad, expect) in [
            ("amount >", "expected a value"),
            ("(amount > 1", "expected ')'"),
            ("amount > 1 extra", "an operator or the end"),
            ("a.", "a field name after '.'"),
            ("a[x]", "an index"),
            ("\"open", "a closing"),
            ("has(", "a field name"),
        ] {
            let e = Filter::parse(bad).unwrap_err();
            assert!(e.contains(expect) && e.contains("at character"), "{bad}: {e}");
        }
    }
}
