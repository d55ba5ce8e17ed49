//! RPM dependencies as rpm writes them: simple (`name`, `name >= 1.2-3`) and boolean ("rich",
//! rpm >= 4.13) expressions: `(A and B)`, `(A or B)`, `(A if B)`, `(A if B else C)`,
//! `(A unless B)`, `(A unless B else C)`, `(A with B)`, `(A without B)`, nested with
//! parentheses. The grammar and meaning follow rpm's docs/manual/boolean_dependencies.md: a chain
//! may repeat one operator (`(a or b or c)`), different operators need their own parentheses;
//! `if`/`unless` take at most one `else`; `with`/`without` must be met by one package. Names may
//! hold balanced parentheses (`perl(Foo::Bar)`, `libc.so.6()(64bit)`). Pure.

use std::collections::BTreeSet;

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dep {
    /// `name`, or `name OP version` (OP one of `=`, `<`, `>`, `<=`, `>=`).
    Simple {
        name: String,
        cmp: Option<(String, String)>,
    },
    And(Vec<Dep>),
    Or(Vec<Dep>),
    With(Vec<Dep>),
    Without(Box<Dep>, Box<Dep>),
    If {
        then: Box<Dep>,
        cond: Box<Dep>,
        otherwise: Option<Box<Dep>>,
    },
    Unless {
        then: Box<Dep>,
        cond: Box<Dep>,
        otherwise: Option<Box<Dep>>,
    },
}

const OPS: &[&str] = &["=", "==", "<", ">", "<=", ">=", "=<", "=>"];
const KEYWORDS: &[&str] = &["and", "or", "if", "unless", "else", "with", "without"];

struct Lexer<'a> {
    s: &'a [u8],
    i: usize,
}

#[derive(Debug, PartialEq, Eq)]
enum Tok {
    Open,
    Close,
    Word(String),
}

impl Lexer<'_> {
    fn skip_ws(&mut self) {
        while self.i < self.s.len() && self.s[self.i].is_ascii_whitespace() {
            self.i += 1;
        }
    }
    fn peek(&mut self) -> Option<Tok> {
        let save = self.i;
        let t = self.next();
        self.i = save;
        t
    }
    fn next(&mut self) -> Option<Tok> {
        self.skip_ws();
        let c = *self.s.get(self.i)?;
        if c == b'(' {
            self.i += 1;
            return Some(Tok::Open);
        }
        if c == b')' {
            self.i += 1;
            return Some(Tok::Close);
        }
        // A word: up to whitespace, or a `)` that closes nothing opened inside the word.
        let start = self.i;
        let mut depth = 0usize;
        while let Some(&c) = self.s.get(self.i) {
            if c.is_ascii_whitespace() && depth == 0 {
                break;
            }
            if c == b'(' {
                depth += 1;
            } else if c == b')' {
                if depth == 0 {
                    break;
                }
                depth -= 1;
            }
            self.i += 1;
        }
        Some(Tok::Word(
            String::from_utf8_lossy(&self.s[start..self.i]).into_owned(),
        ))
    }
}

/// Parse one dependency as `rpm -q --requires` prints it.
pub fn parse(text: &str) -> Result<Dep, String> {
    let text = text.trim();
    let mut lx = Lexer {
        s: text.as_bytes(),
        i: 0,
    };
    let d = if text.starts_with('(') {
        parse_paren(&mut lx)?
    } else {
        parse_simple(&mut lx)?
    };
    lx.skip_ws();
    if lx.i != lx.s.len() {
        return Err(format!(
            "`{text}`: unexpected `{}`",
            String::from_utf8_lossy(&lx.s[lx.i..])
        ));
    }
    Ok(d)
}

fn parse_simple(lx: &mut Lexer) -> Result<Dep, String> {
    let Some(Tok::Word(name)) = lx.next() else {
        return Err("expected a package name".into());
    };
    if KEYWORDS.contains(&name.as_str()) {
        return Err(format!("expected a package name, found `{name}`"));
    }
    if let Some(Tok::Word(op)) = lx.peek() {
        if OPS.contains(&op.as_str()) {
            lx.next();
            let Some(Tok::Word(v)) = lx.next() else {
                return Err(format!("`{name} {op}`: missing version"));
            };
            return Ok(Dep::Simple {
                name,
                cmp: Some((op, v)),
            });
        }
    }
    Ok(Dep::Simple { name, cmp: None })
}

fn parse_operand(lx: &mut Lexer) -> Result<Dep, String> {
    match lx.peek() {
        Some(Tok::Open) => parse_paren(lx),
        _ => parse_simple(lx),
    }
}

fn parse_paren(lx: &mut Lexer) -> Result<Dep, String> {
    if lx.next() != Some(Tok::Open) {
        return Err("expected `(`".into());
    }
    let first = parse_operand(lx)?;
    let op = match lx.next() {
        Some(Tok::Close) => return Ok(first),
        Some(Tok::Word(w)) if KEYWORDS.contains(&w.as_str()) && w != "else" => w,
        Some(t) => {
            return Err(format!(
                "expected and/or/if/unless/with/without, found {t:?}"
            ))
        }
        None => return Err("unbalanced parentheses".into()),
    };
    let second = parse_operand(lx)?;
    let d = match op.as_str() {
        "and" | "or" | "with" => {
            let mut items = vec![first, second];
            loop {
                match lx.next() {
                    Some(Tok::Close) => break,
                    Some(Tok::Word(w)) if w == op => items.push(parse_operand(lx)?),
                    Some(Tok::Word(w)) => {
                        return Err(format!("`{op}` and `{w}` mixed without parentheses"))
                    }
                    _ => return Err("unbalanced parentheses".into()),
                }
            }
            return Ok(match op.as_str() {
                "and" => Dep::And(items),
                "or" => Dep::Or(items),
                _ => Dep::With(items),
            });
        }
        "without" => Dep::Without(Box::new(first), Box::new(second)),
        _ => {
            let mut otherwise = None;
            if let Some(Tok::Word(w)) = lx.peek() {
                if w == "else" {
                    lx.next();
                    otherwise = Some(Box::new(parse_operand(lx)?));
                }
            }
            let (then, cond) = (Box::new(first), Box::new(second));
            if op == "if" {
                Dep::If {
                    then,
                    cond,
                    otherwise,
                }
            } else {
                Dep::Unless {
                    then,
                    cond,
                    otherwise,
                }
            }
        }
    };
    match lx.next() {
        Some(Tok::Close) => Ok(d),
        Some(t) => Err(format!("expected `)`, found {t:?}")),
        None => Err("unbalanced parentheses".into()),
    }
}

/// What a simple dependency can be met by: the set of providers (empty: unmet). Providers are
/// opaque names; `with`/`without` compare them.
pub trait Providers {
    fn providers(&mut self, name: &str, cmp: Option<(&str, &str)>) -> BTreeSet<String>;
}

fn providers_of(d: &Dep, env: &mut dyn Providers) -> BTreeSet<String> {
    match d {
        Dep::Simple { name, cmp } => {
            env.providers(name, cmp.as_ref().map(|(o, v)| (o.as_str(), v.as_str())))
        }
        // For nested expressions: met or not (one pseudo-provider).
        other => {
            if satisfied(other, env) {
                BTreeSet::from(["*".to_string()])
            } else {
                BTreeSet::new()
            }
        }
    }
}

/// Whether the requirement is met in `env` (rpm's meaning of each operator for Requires).
pub fn satisfied(d: &Dep, env: &mut dyn Providers) -> bool {
    match d {
        Dep::Simple { .. } => !providers_of(d, env).is_empty(),
        Dep::And(v) => v.iter().all(|x| satisfied(x, env)),
        Dep::Or(v) => v.iter().any(|x| satisfied(x, env)),
        Dep::With(v) => {
            let mut sets = v.iter().map(|x| providers_of(x, env));
            let Some(mut common) = sets.next() else {
                return false;
            };
            for s in sets {
                common = common.intersection(&s).cloned().collect();
            }
            !common.is_empty()
        }
        Dep::Without(a, b) => {
            let pa = providers_of(a, env);
            let pb = providers_of(b, env);
            pa.difference(&pb).next().is_some()
        }
        Dep::If {
            then,
            cond,
            otherwise,
        } => {
            if satisfied(cond, env) {
                satisfied(then, env)
            } else {
                otherwise.as_ref().is_none_or(|o| satisfied(o, env))
            }
        }
        Dep::Unless {
            then,
            cond,
            otherwise,
        } => {
            if !satisfied(cond, env) {
                satisfied(then, env)
            } else {
                otherwise.as_ref().is_none_or(|o| satisfied(o, env))
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    struct Have(Vec<(&'static str, &'static str)>);
    impl Providers for Have {
        fn providers(&mut self, name: &str, _: Option<(&str, &str)>) -> BTreeSet<String> {
            self.0
                .iter()
                .filter(|(n, _)| *n == name)
                .map(|(_, p)| p.to_string())
                .collect()
        }
    }

    fn s(name: &str) -> Dep {
        Dep::Simple {
            name: name.into(),
            cmp: None,
        }
    }

    #[test]
    fn parses_rpms_grammar() {
        assert_eq!(
            parse("(bash or zsh)").unwrap(),
            Dep::Or(vec![s("bash"), s("zsh")])
        );
        assert_eq!(
            parse("(coreutils and sed and grep)").unwrap(),
            Dep::And(vec![s("coreutils"), s("sed"), s("grep")])
        );
        assert_eq!(
            parse("foo >= 1.2-3").unwrap(),
            Dep::Simple {
                name: "foo".into(),
                cmp: Some((">=".into(), "1.2-3".into()))
            }
        );
        assert_eq!(
            parse("(java-17 >= 17 or (java-21 if jdk-tools))").unwrap(),
            Dep::Or(vec![
                Dep::Simple {
                    name: "java-17".into(),
                    cmp: Some((">=".into(), "17".into()))
                },
                Dep::If {
                    then: Box::new(s("java-21")),
                    cond: Box::new(s("jdk-tools")),
                    otherwise: None
                }
            ])
        );
        assert_eq!(
            parse("(a unless b else c)").unwrap(),
            Dep::Unless {
                then: Box::new(s("a")),
                cond: Box::new(s("b")),
                otherwise: Some(Box::new(s("c")))
            }
        );
        assert_eq!(
            parse("(perl(Foo::Bar) or libc.so.6()(64bit))").unwrap(),
            Dep::Or(vec![s("perl(Foo::Bar)"), s("libc.so.6()(64bit)")])
        );
        assert_eq!(
            parse("(pkgA-foo with pkgA-bar)").unwrap(),
            Dep::With(vec![s("pkgA-foo"), s("pkgA-bar")])
        );
        for bad in [
            "(a or b and c)",
            "(a or",
            "(a if b else c else d)",
            "(and b)",
            "(a) b",
            "(a or b))",
        ] {
            assert!(parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn evaluates_like_rpm_requires() {
        let mut env = Have(vec![
            ("bash", "bash"),
            ("coreutils", "coreutils"),
            ("sed", "sed"),
            ("pkgA-foo", "pkgA"),
            ("pkgA-bar", "pkgA"),
            ("pkgB-bar", "pkgB"),
        ]);
        let ok = |e: &str, env: &mut Have| satisfied(&parse(e).unwrap(), env);
        assert!(ok("(bash or zsh)", &mut env));
        assert!(ok("(coreutils and sed)", &mut env));
        assert!(!ok("(coreutils and zsh)", &mut env));
        assert!(!ok("(zsh or ksh)", &mut env));
        // if: required only when the condition is installed.
        assert!(ok("(zsh if ksh)", &mut env));
        assert!(!ok("(zsh if bash)", &mut env));
        assert!(ok("(zsh if ksh else sed)", &mut env));
        assert!(!ok("(zsh if ksh else ksh)", &mut env));
        // unless: required only when the condition is missing.
        assert!(ok("(zsh unless bash)", &mut env));
        assert!(!ok("(zsh unless ksh)", &mut env));
        assert!(ok("(zsh unless bash else sed)", &mut env));
        // with/without: one provider.
        assert!(ok("(pkgA-foo with pkgA-bar)", &mut env));
        assert!(!ok("(pkgA-foo with pkgB-bar)", &mut env));
        assert!(ok("(pkgA-foo without pkgB-bar)", &mut env));
        assert!(!ok("(pkgA-foo without pkgA-bar)", &mut env));
        assert!(ok("((zsh or bash) and (sed if coreutils))", &mut env));
    }
}
