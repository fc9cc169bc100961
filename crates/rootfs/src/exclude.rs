//! LXC/GNU tar style exclude patterns (`--anchored --exclude`).
#![forbid(unsafe_code)]

/// A set of patterns like LXC's `excludes-user` lines (`./dev/null`).
///
/// Matching follows GNU tar with `--anchored --wildcards`: a pattern is
/// matched against the whole member name with `*`, `?` and `[...]` (which
/// also match `/`), with or without a leading `./`, and excluding a directory
/// excludes everything below it (`FNM_LEADING_DIR`).
#[derive(Debug, Clone, Default)]
pub(crate) struct Excludes {
    pats: Vec<Vec<u8>>,
}

fn norm(s: &[u8]) -> &[u8] {
    let mut s = s;
    loop {
        if let Some(r) = s.strip_prefix(b"./") {
            s = r;
        } else if let Some(r) = s.strip_prefix(b"/") {
            s = r;
        } else {
            break;
        }
    }
    while let Some(r) = s.strip_suffix(b"/") {
        s = r;
    }
    s
}

impl Excludes {
    pub(crate) fn new(pats: &[String]) -> Excludes {
        Excludes {
            pats: pats
                .iter()
                .map(|p| norm(p.trim().as_bytes()).to_vec())
                .filter(|p| !p.is_empty())
                .collect(),
        }
    }

    /// Whether the cleaned member name (`a/b/c`, no leading `./`) is excluded.
    pub(crate) fn matches(&self, name: &[u8]) -> bool {
        if self.pats.is_empty() {
            return false;
        }
        let name = norm(name);
        self.pats.iter().any(|p| {
            if fnmatch(p, name) {
                return true;
            }
            // FNM_LEADING_DIR: the pattern may match a leading directory.
            name.iter()
                .enumerate()
                .any(|(i, &c)| c == b'/' && fnmatch(p, &name[..i]))
        })
    }
}

/// Shell wildcard match where `*` and `?` also match `/`.
fn fnmatch(p: &[u8], s: &[u8]) -> bool {
    let (mut pi, mut si) = (0, 0);
    let mut star: Option<(usize, usize)> = None;
    while si < s.len() {
        if pi < p.len() {
            match p[pi] {
                b'*' => {
                    star = Some((pi, si));
                    pi += 1;
                    continue;
                }
                b'?' => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                b'[' => {
                    if let Some((ok, next)) = class(&p[pi..], s[si]) {
                        if ok {
                            pi += next;
                            si += 1;
                            continue;
                        }
                    } else if s[si] == b'[' {
                        pi += 1;
                        si += 1;
                        continue;
                    }
                }
                b'\\' if pi + 1 < p.len() && p[pi + 1] == s[si] => {
                    pi += 2;
                    si += 1;
                    continue;
                }
                b'\\' if pi + 1 < p.len() => {}
                c if c == s[si] => {
                    pi += 1;
                    si += 1;
                    continue;
                }
                _ => {}
            }
        }
        match star {
            Some((sp, ss)) => {
                pi = sp + 1;
                si = ss + 1;
                star = Some((sp, ss + 1));
            }
            None => return false,
        }
    }
    p[pi..].iter().all(|&c| c == b'*')
}

/// Matches a `[...]` class at the start of `p`; returns (matched, length).
fn class(p: &[u8], c: u8) -> Option<(bool, usize)> {
    let mut i = 1;
    let neg = matches!(p.get(i), Some(b'!') | Some(b'^'));
    if neg {
        i += 1;
    }
    let mut hit = false;
    let mut first = true;
    while i < p.len() {
        if p[i] == b']' && !first {
            return Some((hit != neg, i + 1));
        }
        first = false;
        if i + 2 < p.len() && p[i + 1] == b'-' && p[i + 2] != b']' {
            if p[i] <= c && c <= p[i + 2] {
                hit = true;
            }
            i += 3;
        } else {
            if p[i] == c {
                hit = true;
            }
            i += 1;
        }
    }
    None
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lxc_style() {
        let e = Excludes::new(&[
            "./dev/null".into(),
            "./dev/tty*".into(),
            "var/cache/[ab]?".into(),
            "./opt/".into(),
        ]);
        assert!(e.matches(b"dev/null"));
        assert!(e.matches(b"./dev/null"));
        assert!(!e.matches(b"dev/nullx"));
        assert!(!e.matches(b"xdev/null"));
        assert!(e.matches(b"dev/tty1"));
        assert!(e.matches(b"dev/tty/sub"));
        assert!(e.matches(b"var/cache/ax"));
        assert!(!e.matches(b"var/cache/cx"));
        assert!(e.matches(b"opt"));
        assert!(e.matches(b"opt/a/b"));
        assert!(!e.matches(b"optx"));
        assert!(!Excludes::default().matches(b"dev/null"));
    }
}
