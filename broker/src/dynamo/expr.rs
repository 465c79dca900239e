//! DynamoDB's expressions: conditions (ConditionExpression, FilterExpression,
//! KeyConditionExpression), updates (UpdateExpression: SET, REMOVE, ADD, DELETE) and
//! projections, with `#name` and `:value` placeholders; and the legacy `Expected` and
//! `AttributeUpdates` turned into the same trees. Parsed once per request, then evaluated
//! against an item.

use super::DynamoError;
use super::value::{self, AttributeValue, Item, Number, Step};
use std::cmp::Ordering;
use std::collections::{BTreeMap, BTreeSet};

pub type Path = Vec<Step>;

#[derive(Debug, Clone)]
pub enum Operand {
    Path(Path),
    Value(AttributeValue),
    Size(Path),
    IfNotExists(Path, Box<Operand>),
    ListAppend(Box<Operand>, Box<Operand>),
    Plus(Box<Operand>, Box<Operand>),
    Minus(Box<Operand>, Box<Operand>),
}

#[derive(Debug, Clone, Copy, PartialEq)]
pub enum Comparator {
    Eq,
    Ne,
    Lt,
    Le,
    Gt,
    Ge,
}

#[derive(Debug, Clone)]
pub enum Condition {
    Compare(Operand, Comparator, Operand),
    Between(Operand, Operand, Operand),
    In(Operand, Vec<Operand>),
    Exists(Path),
    NotExists(Path),
    Type(Path, Operand),
    BeginsWith(Operand, Operand),
    Contains(Operand, Operand),
    And(Box<Condition>, Box<Condition>),
    Or(Box<Condition>, Box<Condition>),
    Not(Box<Condition>),
}

/// The actions of one update, in DynamoDB's order of application.
#[derive(Debug, Clone, Default)]
pub struct Update {
    pub set: Vec<(Path, Operand)>,
    pub remove: Vec<Path>,
    pub add: Vec<(Path, Operand)>,
    pub delete: Vec<(Path, Operand)>,
}

/// `ExpressionAttributeNames` and `ExpressionAttributeValues` of a request, and which of them
/// its expressions used (DynamoDB refuses unused ones).
#[derive(Debug, Default)]
pub struct Placeholders {
    names: BTreeMap<String, String>,
    values: BTreeMap<String, AttributeValue>,
    used_names: BTreeSet<String>,
    used_values: BTreeSet<String>,
}

impl Placeholders {
    pub fn new(
        names: Option<BTreeMap<String, String>>,
        values: Option<BTreeMap<String, AttributeValue>>,
    ) -> Result<Placeholders, DynamoError> {
        let values = values.unwrap_or_default();
        for v in values.values() {
            v.validate()?;
        }
        if names.as_ref().is_some_and(BTreeMap::is_empty) {
            return Err(DynamoError::validation("ExpressionAttributeNames must not be empty"));
        }
        Ok(Placeholders { names: names.unwrap_or_default(), values, ..Placeholders::default() })
    }

    /// Every placeholder given was used by some expression of the request.
    pub fn check_all_used(&self) -> Result<(), DynamoError> {
        let unused = |given: Vec<&String>, used: &BTreeSet<String>| {
            given.into_iter().filter(|k| !used.contains(*k)).cloned().collect::<Vec<_>>()
        };
        let names = unused(self.names.keys().collect(), &self.used_names);
        if !names.is_empty() {
            return Err(DynamoError::validation(format!(
                "Value provided in ExpressionAttributeNames unused in expressions: keys: {{{}}}",
                names.join(", ")
            )));
        }
        let values = unused(self.values.keys().collect(), &self.used_values);
        if !values.is_empty() {
            return Err(DynamoError::validation(format!(
                "Value provided in ExpressionAttributeValues unused in expressions: keys: {{{}}}",
                values.join(", ")
            )));
        }
        Ok(())
    }
}

// ---- tokens ----

#[derive(Debug, Clone, PartialEq)]
enum Token {
    Name(String),
    NamePlaceholder(String),
    ValuePlaceholder(String),
    Number(usize),
    Punct(&'static str),
}

fn tokenize(text: &str, what: &str) -> Result<Vec<Token>, DynamoError> {
    let invalid = |m: String| DynamoError::validation(format!("Invalid {what}: {m}"));
    let bytes = text.as_bytes();
    let (mut i, mut out) = (0, Vec::new());
    let word = |start: usize| {
        let mut end = start;
        while end < bytes.len() && (bytes[end].is_ascii_alphanumeric() || bytes[end] == b'_') {
            end += 1;
        }
        end
    };
    while i < bytes.len() {
        let c = bytes[i];
        if c.is_ascii_whitespace() {
            i += 1;
            continue;
        }
        let two = text.get(i..i + 2);
        if let Some(p) = ["<>", "<=", ">="].into_iter().find(|p| two == Some(*p)) {
            out.push(Token::Punct(p));
            i += 2;
            continue;
        }
        if let Some(p) =
            ["(", ")", "[", "]", ",", ".", "=", "<", ">", "+", "-"].into_iter().find(|p| p.as_bytes()[0] == c)
        {
            out.push(Token::Punct(p));
            i += 1;
            continue;
        }
        if c == b'#' || c == b':' {
            let end = word(i + 1);
            if end == i + 1 {
                return Err(invalid(format!("Syntax error; token: \"{}\", near: \"{}\"", c as char, &text[i..])));
            }
            let token = text[i..end].to_string();
            out.push(if c == b'#' { Token::NamePlaceholder(token) } else { Token::ValuePlaceholder(token) });
            i = end;
            continue;
        }
        if c.is_ascii_digit() {
            let end = word(i);
            let n = text[i..end].parse().map_err(|_| invalid(format!("Syntax error; token: \"{}\"", &text[i..end])))?;
            out.push(Token::Number(n));
            i = end;
            continue;
        }
        if c.is_ascii_alphabetic() || c == b'_' {
            let end = word(i);
            out.push(Token::Name(text[i..end].to_string()));
            i = end;
            continue;
        }
        return Err(invalid(format!("Syntax error; token: \"{}\", near: \"{}\"", c as char, &text[i..])));
    }
    Ok(out)
}

// ---- parser ----

struct Parser<'a> {
    tokens: Vec<Token>,
    at: usize,
    what: &'static str,
    placeholders: &'a mut Placeholders,
}

fn keyword(token: Option<&Token>, word: &str) -> bool {
    matches!(token, Some(Token::Name(n)) if n.eq_ignore_ascii_case(word))
}

impl Parser<'_> {
    fn peek(&self) -> Option<&Token> {
        self.tokens.get(self.at)
    }

    fn peek_at(&self, ahead: usize) -> Option<&Token> {
        self.tokens.get(self.at + ahead)
    }

    fn next(&mut self) -> Option<Token> {
        let t = self.tokens.get(self.at).cloned();
        self.at += 1;
        t
    }

    fn error(&self, message: impl std::fmt::Display) -> DynamoError {
        DynamoError::validation(format!("Invalid {}: {message}", self.what))
    }

    fn syntax_error(&self) -> DynamoError {
        match self.peek() {
            Some(t) => self.error(format!("Syntax error; token: \"{}\"", show(t))),
            None => self.error("Syntax error; token: <EOF>, near: the end"),
        }
    }

    fn punct(&mut self, p: &str) -> Result<(), DynamoError> {
        match self.peek() {
            Some(Token::Punct(q)) if *q == p => {
                self.at += 1;
                Ok(())
            }
            _ => Err(self.syntax_error()),
        }
    }

    fn is_punct(&self, p: &str) -> bool {
        matches!(self.peek(), Some(Token::Punct(q)) if *q == p)
    }

    fn is_keyword(&self, word: &str) -> bool {
        keyword(self.peek(), word)
    }

    fn done(&self) -> Result<(), DynamoError> {
        if self.at < self.tokens.len() { Err(self.syntax_error()) } else { Ok(()) }
    }

    fn name_segment(&mut self) -> Result<String, DynamoError> {
        match self.next() {
            Some(Token::Name(n)) => Ok(n),
            Some(Token::NamePlaceholder(p)) => {
                let name = self.placeholders.names.get(&p).cloned().ok_or_else(|| {
                    self.error(format!(
                        "An expression attribute name used in the document path is not defined; attribute name: {p}"
                    ))
                })?;
                self.placeholders.used_names.insert(p);
                Ok(name)
            }
            _ => {
                self.at -= 1;
                Err(self.syntax_error())
            }
        }
    }

    fn path(&mut self) -> Result<Path, DynamoError> {
        let mut path = vec![Step::Key(self.name_segment()?)];
        loop {
            if self.is_punct(".") {
                self.at += 1;
                path.push(Step::Key(self.name_segment()?));
            } else if self.is_punct("[") {
                self.at += 1;
                let Some(Token::Number(n)) = self.next() else { return Err(self.syntax_error()) };
                self.punct("]")?;
                path.push(Step::Index(n));
            } else {
                return Ok(path);
            }
        }
    }

    fn value(&mut self, placeholder: String) -> Result<AttributeValue, DynamoError> {
        let value = self.placeholders.values.get(&placeholder).cloned().ok_or_else(|| {
            self.error(format!(
                "An expression attribute value used in expression is not defined; attribute value: {placeholder}"
            ))
        })?;
        self.placeholders.used_values.insert(placeholder);
        Ok(value)
    }

    /// A path, a `:value`, or a function giving a value (`size`; in updates also
    /// `if_not_exists` and `list_append`).
    fn operand(&mut self, in_update: bool) -> Result<Operand, DynamoError> {
        match (self.peek().cloned(), self.peek_at(1)) {
            (Some(Token::ValuePlaceholder(p)), _) => {
                self.at += 1;
                Ok(Operand::Value(self.value(p)?))
            }
            (Some(Token::Name(f)), Some(Token::Punct("("))) => {
                self.at += 2;
                let operand = match f.as_str() {
                    "size" if !in_update => Operand::Size(self.path()?),
                    "if_not_exists" if in_update => {
                        let path = self.path()?;
                        self.punct(",")?;
                        Operand::IfNotExists(path, Box::new(self.operand(true)?))
                    }
                    "list_append" if in_update => {
                        let a = self.operand(true)?;
                        self.punct(",")?;
                        Operand::ListAppend(Box::new(a), Box::new(self.operand(true)?))
                    }
                    _ => return Err(self.error(format!("Invalid function name; function: {f}"))),
                };
                self.punct(")")?;
                Ok(operand)
            }
            _ => Ok(Operand::Path(self.path()?)),
        }
    }

    fn condition(&mut self) -> Result<Condition, DynamoError> {
        let mut left = self.conjunction()?;
        while self.is_keyword("OR") {
            self.at += 1;
            left = Condition::Or(Box::new(left), Box::new(self.conjunction()?));
        }
        Ok(left)
    }

    fn conjunction(&mut self) -> Result<Condition, DynamoError> {
        let mut left = self.negation()?;
        while self.is_keyword("AND") {
            self.at += 1;
            left = Condition::And(Box::new(left), Box::new(self.negation()?));
        }
        Ok(left)
    }

    fn negation(&mut self) -> Result<Condition, DynamoError> {
        if self.is_keyword("NOT") {
            self.at += 1;
            return Ok(Condition::Not(Box::new(self.negation()?)));
        }
        self.primary()
    }

    fn primary(&mut self) -> Result<Condition, DynamoError> {
        if self.is_punct("(") {
            self.at += 1;
            let inner = self.condition()?;
            self.punct(")")?;
            return Ok(inner);
        }
        if let (Some(Token::Name(f)), Some(Token::Punct("("))) = (self.peek().cloned(), self.peek_at(1)) {
            let function = match f.as_str() {
                "attribute_exists" | "attribute_not_exists" | "attribute_type" | "begins_with" | "contains" => Some(f),
                _ => None,
            };
            if let Some(f) = function {
                self.at += 2;
                let path = self.path()?;
                let condition = match f.as_str() {
                    "attribute_exists" => Condition::Exists(path),
                    "attribute_not_exists" => Condition::NotExists(path),
                    _ => {
                        self.punct(",")?;
                        let operand = self.operand(false)?;
                        match f.as_str() {
                            "attribute_type" => Condition::Type(path, operand),
                            "begins_with" => Condition::BeginsWith(Operand::Path(path), operand),
                            _ => Condition::Contains(Operand::Path(path), operand),
                        }
                    }
                };
                self.punct(")")?;
                return Ok(condition);
            }
        }
        let left = self.operand(false)?;
        if self.is_keyword("BETWEEN") {
            self.at += 1;
            let low = self.operand(false)?;
            if !self.is_keyword("AND") {
                return Err(self.syntax_error());
            }
            self.at += 1;
            return Ok(Condition::Between(left, low, self.operand(false)?));
        }
        if self.is_keyword("IN") {
            self.at += 1;
            self.punct("(")?;
            let mut list = vec![self.operand(false)?];
            while self.is_punct(",") {
                self.at += 1;
                list.push(self.operand(false)?);
            }
            self.punct(")")?;
            return Ok(Condition::In(left, list));
        }
        let comparator = match self.next() {
            Some(Token::Punct("=")) => Comparator::Eq,
            Some(Token::Punct("<>")) => Comparator::Ne,
            Some(Token::Punct("<")) => Comparator::Lt,
            Some(Token::Punct("<=")) => Comparator::Le,
            Some(Token::Punct(">")) => Comparator::Gt,
            Some(Token::Punct(">=")) => Comparator::Ge,
            _ => {
                self.at -= 1;
                return Err(self.syntax_error());
            }
        };
        Ok(Condition::Compare(left, comparator, self.operand(false)?))
    }

    fn update(&mut self) -> Result<Update, DynamoError> {
        let mut update = Update::default();
        let mut seen = BTreeSet::new();
        while let Some(Token::Name(clause)) = self.peek().cloned() {
            let clause = clause.to_ascii_uppercase();
            if !seen.insert(clause.clone()) {
                return Err(
                    self.error(format!("The \"{clause}\" section can only be used once in an update expression;"))
                );
            }
            self.at += 1;
            loop {
                match clause.as_str() {
                    "SET" => {
                        let path = self.path()?;
                        self.punct("=")?;
                        let value = self.operand(true)?;
                        let value = if self.is_punct("+") || self.is_punct("-") {
                            let plus = self.is_punct("+");
                            self.at += 1;
                            let right = Box::new(self.operand(true)?);
                            if plus {
                                Operand::Plus(Box::new(value), right)
                            } else {
                                Operand::Minus(Box::new(value), right)
                            }
                        } else {
                            value
                        };
                        update.set.push((path, value));
                    }
                    "REMOVE" => update.remove.push(self.path()?),
                    "ADD" | "DELETE" => {
                        let path = self.path()?;
                        let Some(Token::ValuePlaceholder(p)) = self.next() else {
                            self.at -= 1;
                            return Err(self.syntax_error());
                        };
                        let value = Operand::Value(self.value(p)?);
                        if clause == "ADD" { update.add.push((path, value)) } else { update.delete.push((path, value)) }
                    }
                    _ => {
                        self.at -= 1;
                        return Err(self.syntax_error());
                    }
                }
                if !self.is_punct(",") {
                    break;
                }
                self.at += 1;
            }
        }
        self.done()?;
        if seen.is_empty() {
            return Err(self.syntax_error());
        }
        Ok(update)
    }
}

fn show(t: &Token) -> String {
    match t {
        Token::Name(n) | Token::NamePlaceholder(n) | Token::ValuePlaceholder(n) => n.clone(),
        Token::Number(n) => n.to_string(),
        Token::Punct(p) => p.to_string(),
    }
}

fn parser<'a>(text: &str, what: &'static str, placeholders: &'a mut Placeholders) -> Result<Parser<'a>, DynamoError> {
    if text.trim().is_empty() {
        return Err(DynamoError::validation(format!("Invalid {what}: The expression can not be empty;")));
    }
    Ok(Parser { tokens: tokenize(text, what)?, at: 0, what, placeholders })
}

pub fn parse_condition(
    text: &str,
    what: &'static str,
    placeholders: &mut Placeholders,
) -> Result<Condition, DynamoError> {
    let mut p = parser(text, what, placeholders)?;
    let condition = p.condition()?;
    p.done()?;
    Ok(condition)
}

pub fn parse_update(text: &str, placeholders: &mut Placeholders) -> Result<Update, DynamoError> {
    let update = parser(text, "UpdateExpression", placeholders)?.update()?;
    let paths: Vec<&Path> = update
        .set
        .iter()
        .map(|(p, _)| p)
        .chain(&update.remove)
        .chain(update.add.iter().map(|(p, _)| p))
        .chain(update.delete.iter().map(|(p, _)| p))
        .collect();
    for (i, a) in paths.iter().enumerate() {
        for b in &paths[i + 1..] {
            let n = a.len().min(b.len());
            if a[..n] == b[..n] {
                return Err(DynamoError::validation(format!(
                    "Invalid UpdateExpression: Two document paths overlap with each other; must remove or rewrite one of these paths; path one: [{}], path two: [{}]",
                    show_path(a),
                    show_path(b)
                )));
            }
        }
    }
    Ok(update)
}

pub fn parse_projection(text: &str, placeholders: &mut Placeholders) -> Result<Vec<Path>, DynamoError> {
    let mut p = parser(text, "ProjectionExpression", placeholders)?;
    let mut paths = vec![p.path()?];
    while p.is_punct(",") {
        p.at += 1;
        paths.push(p.path()?);
    }
    p.done()?;
    Ok(paths)
}

pub fn show_path(path: &[Step]) -> String {
    path.iter()
        .map(|s| match s {
            Step::Key(k) => k.clone(),
            Step::Index(i) => format!("[{i}]"),
        })
        .collect::<Vec<_>>()
        .join(", ")
}

// ---- evaluation ----

impl Operand {
    /// Its value in `item`; None where a path leads nowhere.
    pub fn eval(&self, item: &Item) -> Result<Option<AttributeValue>, DynamoError> {
        Ok(match self {
            Operand::Path(p) => value::get(item, p).cloned(),
            Operand::Value(v) => Some(v.clone()),
            Operand::Size(p) => {
                value::get(item, p).and_then(AttributeValue::size).map(|n| AttributeValue::N(n.to_string()))
            }
            Operand::IfNotExists(p, fallback) => match value::get(item, p) {
                Some(v) => Some(v.clone()),
                None => fallback.eval(item)?,
            },
            Operand::ListAppend(a, b) => match (required(a, item)?, required(b, item)?) {
                (AttributeValue::L(mut a), AttributeValue::L(b)) => {
                    a.extend(b);
                    Some(AttributeValue::L(a))
                }
                _ => {
                    return Err(DynamoError::validation(
                        "Invalid UpdateExpression: Incorrect operand type for operator or function; operator or function: list_append, operand type: not a list",
                    ));
                }
            },
            Operand::Plus(a, b) | Operand::Minus(a, b) => {
                let number = |v: AttributeValue, op: &str| match v {
                    AttributeValue::N(n) => Number::parse(&n),
                    other => Err(DynamoError::validation(format!(
                        "Invalid UpdateExpression: Incorrect operand type for operator or function; operator: {op}, operand type: {}",
                        other.type_name()
                    ))),
                };
                let op = if matches!(self, Operand::Plus(..)) { "+" } else { "-" };
                let (a, b) = (number(required(a, item)?, op)?, number(required(b, item)?, op)?);
                let b = if op == "+" { b } else { b.negate() };
                Some(AttributeValue::N(a.plus(b)?.canonical()))
            }
        })
    }
}

fn required(operand: &Operand, item: &Item) -> Result<AttributeValue, DynamoError> {
    operand.eval(item)?.ok_or_else(|| {
        DynamoError::validation("The provided expression refers to an attribute that does not exist in the item")
    })
}

impl Condition {
    pub fn holds(&self, item: &Item) -> Result<bool, DynamoError> {
        Ok(match self {
            Condition::Compare(a, cmp, b) => match (a.eval(item)?, b.eval(item)?) {
                (Some(a), Some(b)) => match cmp {
                    Comparator::Eq => a.same(&b),
                    Comparator::Ne => !a.same(&b),
                    _ => a.order(&b).is_some_and(|o| match cmp {
                        Comparator::Lt => o == Ordering::Less,
                        Comparator::Le => o != Ordering::Greater,
                        Comparator::Gt => o == Ordering::Greater,
                        _ => o != Ordering::Less,
                    }),
                },
                // What is not there equals nothing.
                _ => *cmp == Comparator::Ne,
            },
            Condition::Between(v, low, high) => match (v.eval(item)?, low.eval(item)?, high.eval(item)?) {
                (Some(v), Some(low), Some(high)) => {
                    if low.order(&high) == Some(Ordering::Greater) {
                        return Err(DynamoError::validation(
                            "Invalid ConditionExpression: The BETWEEN operator requires upper bound to be greater than or equal to lower bound",
                        ));
                    }
                    v.order(&low).is_some_and(|o| o != Ordering::Less)
                        && v.order(&high).is_some_and(|o| o != Ordering::Greater)
                }
                _ => false,
            },
            Condition::In(v, list) => match v.eval(item)? {
                Some(v) => {
                    let mut found = false;
                    for candidate in list {
                        found |= candidate.eval(item)?.is_some_and(|c| c.same(&v));
                    }
                    found
                }
                None => false,
            },
            Condition::Exists(p) => value::get(item, p).is_some(),
            Condition::NotExists(p) => value::get(item, p).is_none(),
            Condition::Type(p, t) => match (value::get(item, p), t.eval(item)?) {
                (Some(v), Some(AttributeValue::S(t))) => v.type_name() == t,
                (_, Some(AttributeValue::S(_))) => false,
                _ => {
                    return Err(DynamoError::validation(
                        "Invalid ConditionExpression: Incorrect operand type for operator or function; operator or function: attribute_type, operand type: not a string",
                    ));
                }
            },
            Condition::BeginsWith(v, prefix) => match (v.eval(item)?, prefix.eval(item)?) {
                (Some(v), Some(prefix)) => v.begins_with(&prefix),
                _ => false,
            },
            Condition::Contains(v, x) => match (v.eval(item)?, x.eval(item)?) {
                (Some(v), Some(x)) => v.contains(&x),
                _ => false,
            },
            Condition::And(a, b) => a.holds(item)? && b.holds(item)?,
            Condition::Or(a, b) => a.holds(item)? || b.holds(item)?,
            Condition::Not(a) => !a.holds(item)?,
        })
    }
}

impl Update {
    /// The item after the update, and the top-level attributes it touched (for
    /// ReturnValues UPDATED_OLD / UPDATED_NEW). Right-hand sides read the item as it was.
    pub fn apply(&self, old: &Item, key_names: &[&str]) -> Result<(Item, BTreeSet<String>), DynamoError> {
        let mut new = old.clone();
        let mut touched = BTreeSet::new();
        let all = self
            .set
            .iter()
            .map(|(p, _)| p)
            .chain(&self.remove)
            .chain(self.add.iter().map(|(p, _)| p))
            .chain(self.delete.iter().map(|(p, _)| p));
        for path in all {
            if let Some(Step::Key(top)) = path.first() {
                if key_names.contains(&top.as_str()) {
                    return Err(DynamoError::validation(format!(
                        "One or more parameter values were invalid: Cannot update attribute {top}. This attribute is part of the key"
                    )));
                }
                touched.insert(top.clone());
            }
        }
        let values: Vec<Option<AttributeValue>> =
            self.set.iter().map(|(_, v)| v.eval(old)).collect::<Result<_, _>>()?;
        for ((path, _), v) in self.set.iter().zip(values) {
            let v = v.ok_or_else(|| {
                DynamoError::validation(
                    "The provided expression refers to an attribute that does not exist in the item",
                )
            })?;
            v.validate()?;
            value::set(&mut new, path, v)?;
        }
        for path in &self.remove {
            value::remove(&mut new, path);
        }
        for (path, operand) in &self.add {
            let operand = operand.eval(old)?.expect("ADD takes a value");
            let sum = value::add(value::get(&new, path), &operand)?;
            value::set(&mut new, path, sum)?;
        }
        for (path, operand) in &self.delete {
            let operand = operand.eval(old)?.expect("DELETE takes a value");
            match value::delete_from(value::get(&new, path), &operand)? {
                Some(left) => value::set(&mut new, path, left)?,
                None => value::remove(&mut new, path),
            }
        }
        Ok((new, touched))
    }
}

/// The part of `item` at `paths` (ProjectionExpression), nested as in the item.
pub fn project(item: &Item, paths: &[Path]) -> Item {
    let mut out = Item::new();
    for path in paths {
        let Some(v) = value::get(item, path) else { continue };
        // Build the containers down to the value, keeping what earlier paths put there.
        let mut built = v.clone();
        for step in path[1..].iter().rev() {
            built = match step {
                Step::Key(k) => AttributeValue::M(BTreeMap::from([(k.clone(), built)])),
                Step::Index(_) => AttributeValue::L(vec![built]),
            };
        }
        let Some(Step::Key(top)) = path.first() else { continue };
        match (out.get_mut(top), built) {
            (Some(existing), built) => merge(existing, built),
            (None, built) => {
                out.insert(top.clone(), built);
            }
        }
    }
    out
}

fn merge(into: &mut AttributeValue, from: AttributeValue) {
    match (into, from) {
        (AttributeValue::M(a), AttributeValue::M(b)) => {
            for (k, v) in b {
                match a.get_mut(&k) {
                    Some(existing) => merge(existing, v),
                    None => {
                        a.insert(k, v);
                    }
                }
            }
        }
        (AttributeValue::L(a), AttributeValue::L(b)) => a.extend(b),
        _ => {}
    }
}

// ---- the legacy parameters ----

/// One entry of `Expected` (legacy conditions).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct ExpectedValue {
    pub value: Option<AttributeValue>,
    pub exists: Option<bool>,
    pub comparison_operator: Option<String>,
    pub attribute_value_list: Option<Vec<AttributeValue>>,
}

/// `Expected` (and `ConditionalOperator`) as one condition.
pub fn expected(
    expected: &BTreeMap<String, ExpectedValue>,
    conditional_operator: Option<&str>,
) -> Result<Option<Condition>, DynamoError> {
    let or = match conditional_operator {
        None | Some("AND") => false,
        Some("OR") => true,
        Some(other) => {
            return Err(DynamoError::validation(format!(
                "1 validation error detected: Value '{other}' at 'conditionalOperator' failed to satisfy constraint: Member must satisfy enum value set: [AND, OR]"
            )));
        }
    };
    let mut out: Option<Condition> = None;
    for (name, e) in expected {
        let c = expected_one(name, e)?;
        out = Some(match out {
            None => c,
            Some(prev) if or => Condition::Or(Box::new(prev), Box::new(c)),
            Some(prev) => Condition::And(Box::new(prev), Box::new(c)),
        });
    }
    Ok(out)
}

fn expected_one(name: &str, e: &ExpectedValue) -> Result<Condition, DynamoError> {
    let path = || vec![Step::Key(name.to_string())];
    let attr = || Operand::Path(path());
    if let Some(v) = &e.value {
        v.validate()?;
    }
    if let Some(op) = &e.comparison_operator {
        if e.value.is_some() || e.exists.is_some() {
            return Err(DynamoError::validation(
                "One or more parameter values were invalid: Value or Exists cannot be used with ComparisonOperator",
            ));
        }
        let list = e.attribute_value_list.clone().unwrap_or_default();
        let want = |n: usize| -> Result<Vec<Operand>, DynamoError> {
            if list.len() != n {
                return Err(DynamoError::validation(format!(
                    "One or more parameter values were invalid: Invalid number of argument(s) for the {op} ComparisonOperator"
                )));
            }
            Ok(list.iter().cloned().map(Operand::Value).collect())
        };
        let compare = |c: Comparator| -> Result<Condition, DynamoError> {
            let v = want(1)?.remove(0);
            Ok(Condition::Compare(attr(), c, v))
        };
        return match op.as_str() {
            "EQ" => compare(Comparator::Eq),
            "NE" => compare(Comparator::Ne),
            "LT" => compare(Comparator::Lt),
            "LE" => compare(Comparator::Le),
            "GT" => compare(Comparator::Gt),
            "GE" => compare(Comparator::Ge),
            "NOT_NULL" => want(0).map(|_| Condition::Exists(path())),
            "NULL" => want(0).map(|_| Condition::NotExists(path())),
            "CONTAINS" => Ok(Condition::Contains(attr(), want(1)?.remove(0))),
            "NOT_CONTAINS" => Ok(Condition::And(
                Box::new(Condition::Exists(path())),
                Box::new(Condition::Not(Box::new(Condition::Contains(attr(), want(1)?.remove(0))))),
            )),
            "BEGINS_WITH" => Ok(Condition::BeginsWith(attr(), want(1)?.remove(0))),
            "IN" if !list.is_empty() => Ok(Condition::In(attr(), list.into_iter().map(Operand::Value).collect())),
            "BETWEEN" => {
                let mut bounds = want(2)?;
                let high = bounds.pop().expect("two");
                Ok(Condition::Between(attr(), bounds.pop().expect("two"), high))
            }
            _ => Err(DynamoError::validation(format!(
                "One or more parameter values were invalid: Invalid ComparisonOperator {op} or its arguments"
            ))),
        };
    }
    match (e.exists, &e.value) {
        (Some(false), None) => Ok(Condition::NotExists(path())),
        (Some(false), Some(_)) => Err(DynamoError::validation(
            "One or more parameter values were invalid: Value cannot be used when Exists is false",
        )),
        (_, Some(v)) => Ok(Condition::Compare(attr(), Comparator::Eq, Operand::Value(v.clone()))),
        (_, None) => Err(DynamoError::validation(
            "One or more parameter values were invalid: Value must be provided when Exists is true",
        )),
    }
}

/// One entry of `AttributeUpdates` (legacy updates).
#[derive(Debug, Clone, serde::Deserialize)]
#[serde(rename_all = "PascalCase")]
pub struct AttributeValueUpdate {
    pub value: Option<AttributeValue>,
    pub action: Option<String>,
}

/// `AttributeUpdates` as one update.
pub fn attribute_updates(updates: &BTreeMap<String, AttributeValueUpdate>) -> Result<Update, DynamoError> {
    let mut update = Update::default();
    for (name, u) in updates {
        let path = vec![Step::Key(name.clone())];
        if let Some(v) = &u.value {
            v.validate()?;
        }
        match (u.action.as_deref().unwrap_or("PUT"), &u.value) {
            ("PUT", Some(v)) => update.set.push((path, Operand::Value(v.clone()))),
            ("DELETE", None) => update.remove.push(path),
            ("DELETE", Some(v)) => update.delete.push((path, Operand::Value(v.clone()))),
            ("ADD", Some(v)) => update.add.push((path, Operand::Value(v.clone()))),
            (action @ ("PUT" | "ADD"), None) => {
                return Err(DynamoError::validation(format!(
                    "One or more parameter values were invalid: Only DELETE action is allowed when no attribute value is specified; action {action} on {name}"
                )));
            }
            (other, _) => {
                return Err(DynamoError::validation(format!(
                    "1 validation error detected: Value '{other}' at 'attributeUpdates.{name}.member.action' failed to satisfy constraint: Member must satisfy enum value set: [ADD, PUT, DELETE]"
                )));
            }
        }
    }
    Ok(update)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn item(json: &str) -> Item {
        serde_json::from_str(json).unwrap()
    }

    fn placeholders(values: &str) -> Placeholders {
        let names = BTreeMap::from([("#o".to_string(), "leaseOwner".to_string())]);
        Placeholders::new(Some(names), Some(serde_json::from_str(values).unwrap())).unwrap()
    }

    #[test]
    fn conditions_evaluate_as_dynamodb_does() {
        let lease = item(r#"{"leaseKey": {"S": "shardId-0"}, "leaseOwner": {"S": "w1"}, "leaseCounter": {"N": "7"}}"#);
        let mut p = placeholders(r#"{":w": {"S": "w1"}, ":c": {"N": "7.0"}, ":five": {"N": "5"}}"#);
        let holds = |text: &str, p: &mut Placeholders| {
            parse_condition(text, "ConditionExpression", p).unwrap().holds(&lease).unwrap()
        };
        assert!(holds("#o = :w AND leaseCounter = :c", &mut p));
        assert!(holds("attribute_exists(leaseKey) AND NOT attribute_exists(checkpoint)", &mut p));
        assert!(holds("leaseCounter > :five AND (checkpoint = :w OR #o <> :five)", &mut p));
        assert!(holds("leaseCounter BETWEEN :five AND :c", &mut p));
        assert!(holds("#o IN (:five, :w)", &mut p));
        assert!(holds("begins_with(leaseKey, :w) OR size(leaseKey) = :c OR contains(#o, :w)", &mut p));
        assert!(!holds("missing = :w", &mut p), "a missing attribute equals nothing");
        assert!(holds("missing <> :w", &mut p));
        p.check_all_used().unwrap();

        let mut unused = placeholders(r#"{":w": {"S": "w1"}, ":spare": {"S": "x"}}"#);
        parse_condition("#o = :w", "ConditionExpression", &mut unused).unwrap();
        assert!(unused.check_all_used().unwrap_err().message.contains(":spare"));
        let mut p = placeholders(r#"{}"#);
        for bad in ["", "a =", "a = :undefined", "(a", "a == b", "#undefined = a", "foo(a)"] {
            assert!(parse_condition(bad, "ConditionExpression", &mut p).is_err(), "{bad:?} is refused");
        }
    }

    #[test]
    fn updates_set_remove_add_and_delete() {
        let old = item(r#"{"k": {"S": "a"}, "n": {"N": "1"}, "s": {"SS": ["x", "y"]}, "gone": {"BOOL": true}}"#);
        let mut p =
            placeholders(r#"{":one": {"N": "1"}, ":x": {"SS": ["x"]}, ":l": {"L": [{"S": "e"}]}, ":w": {"S": "w"}}"#);
        let update = parse_update(
            "SET n = n + :one, #o = if_not_exists(#o, :w), l = list_append(:l, :l) REMOVE gone ADD c :one DELETE s :x",
            &mut p,
        )
        .unwrap();
        p.check_all_used().unwrap();
        let (new, touched) = update.apply(&old, &["k"]).unwrap();
        let expected = item(
            r#"{"k": {"S": "a"}, "n": {"N": "2"}, "leaseOwner": {"S": "w"}, "l": {"L": [{"S": "e"}, {"S": "e"}]}, "c": {"N": "1"}, "s": {"SS": ["y"]}}"#,
        );
        assert_eq!(serde_json::to_value(&new).unwrap(), serde_json::to_value(&expected).unwrap());
        assert_eq!(touched.len(), 6);
        // Keys cannot change; paths cannot overlap; a missing operand of + is an error.
        let mut p = placeholders(r#"{":w": {"S": "w"}, ":one": {"N": "1"}}"#);
        let key = parse_update("SET k = :w", &mut p).unwrap();
        assert!(key.apply(&old, &["k"]).unwrap_err().message.contains("part of the key"));
        assert!(parse_update("SET a = :w REMOVE a", &mut p).unwrap_err().message.contains("overlap"));
        let plus = parse_update("SET a = missing + :one", &mut p).unwrap();
        assert!(plus.apply(&old, &["k"]).is_err());
    }

    #[test]
    fn legacy_expected_and_attribute_updates_become_the_same_trees() {
        let lease = item(r#"{"leaseKey": {"S": "s"}, "leaseCounter": {"N": "3"}}"#);
        let expected_json = r#"{"leaseCounter": {"Value": {"N": "3"}}, "leaseOwner": {"Exists": false}}"#;
        let e: BTreeMap<String, ExpectedValue> = serde_json::from_str(expected_json).unwrap();
        assert!(expected(&e, None).unwrap().unwrap().holds(&lease).unwrap());
        let e: BTreeMap<String, ExpectedValue> = serde_json::from_str(
            r#"{"leaseCounter": {"ComparisonOperator": "GT", "AttributeValueList": [{"N": "3"}]}}"#,
        )
        .unwrap();
        assert!(!expected(&e, None).unwrap().unwrap().holds(&lease).unwrap());
        let u: BTreeMap<String, AttributeValueUpdate> = serde_json::from_str(
            r#"{"leaseCounter": {"Value": {"N": "1"}, "Action": "ADD"}, "leaseOwner": {"Value": {"S": "w"}}, "checkpoint": {"Action": "DELETE"}}"#,
        )
        .unwrap();
        let (new, _) = attribute_updates(&u).unwrap().apply(&lease, &["leaseKey"]).unwrap();
        assert!(new["leaseCounter"].same(&AttributeValue::N("4".into())));
        assert!(new["leaseOwner"].same(&AttributeValue::S("w".into())));
    }

    #[test]
    fn projections_keep_only_the_named_paths() {
        let it = item(r#"{"a": {"S": "1"}, "b": {"M": {"c": {"N": "2"}, "d": {"N": "3"}}}, "e": {"BOOL": true}}"#);
        let mut p = Placeholders::default();
        let paths = parse_projection("a, b.c", &mut p).unwrap();
        let projected = project(&it, &paths);
        assert_eq!(
            serde_json::to_value(&projected).unwrap(),
            serde_json::json!({"a": {"S": "1"}, "b": {"M": {"c": {"N": "2"}}}})
        );
    }
}
