//! The LXC image index (`meta/1.0/index-system`, `index-user`): parsing,
//! matching with arch aliases and case folding, and near-match suggestions.
#![forbid(unsafe_code)]

use davit_types::ImageId;
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// Which index to read. Root reads `index-system`; plain users read
/// `index-user` (the images that work unprivileged), as LXC does.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum IndexKind {
    /// `meta/1.0/index-system`.
    System,
    /// `meta/1.0/index-user`.
    User,
}

impl IndexKind {
    /// The file name under `meta/1.0/`.
    pub fn file_name(self) -> &'static str {
        match self {
            IndexKind::System => "index-system",
            IndexKind::User => "index-user",
        }
    }
}

/// One line of the index: the newest build of one image, and where the
/// server keeps it. Its fields read through to the shared [`ImageId`]
/// (`image.dist`, `image.tuple()`); in JSON they stay one flat object.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Image {
    /// Which build: dist, release, arch, variant, build serial.
    #[serde(flatten)]
    pub id: ImageId,
    /// Server path of the build directory, e.g. `/images/debian/.../20240115_05:24/`.
    pub path: String,
}

impl std::ops::Deref for Image {
    type Target = ImageId;
    fn deref(&self) -> &ImageId {
        &self.id
    }
}

/// What the user asked for. Matching folds case for dist and release and
/// normalises the architecture.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Wanted {
    /// Distribution.
    pub dist: String,
    /// Release.
    pub release: String,
    /// Architecture, already normalised with [`normalize_arch`].
    pub arch: String,
    /// Variant.
    pub variant: String,
}

impl Wanted {
    /// Builds a request, normalising the architecture.
    pub fn new(dist: &str, release: &str, arch: &str, variant: &str) -> Self {
        Wanted {
            dist: dist.to_string(),
            release: release.to_string(),
            arch: normalize_arch(arch),
            variant: variant.to_string(),
        }
    }

    /// `dist/release/arch/variant`.
    pub fn tuple(&self) -> String {
        format!(
            "{}/{}/{}/{}",
            self.dist, self.release, self.arch, self.variant
        )
    }

    /// Whether `img` is this image.
    pub fn matches(&self, img: &Image) -> bool {
        img.dist.eq_ignore_ascii_case(&self.dist)
            && img.release.eq_ignore_ascii_case(&self.release)
            && img.arch == self.arch
            && img.variant.eq_ignore_ascii_case(&self.variant)
    }
}

/// Maps kernel and distro spellings to the Debian names the index uses.
pub fn normalize_arch(arch: &str) -> String {
    let a = arch.to_ascii_lowercase();
    match a.as_str() {
        "x86_64" | "x86-64" | "x64" => "amd64",
        "aarch64" | "arm64v8" => "arm64",
        "armv7l" | "armv7" | "armv7hl" | "arm" => "armhf",
        "armv6l" | "armv5tel" => "armel",
        "i686" | "i586" | "i486" | "i386" | "x86" => "i386",
        "ppc64le" => "ppc64el",
        _ => return a,
    }
    .to_string()
}

/// The host's architecture in index spelling.
pub fn host_arch() -> String {
    normalize_arch(std::env::consts::ARCH)
}

/// A parsed index.
#[derive(Debug, Clone, Default)]
pub struct Index {
    /// Every usable line, in file order.
    pub images: Vec<Image>,
}

/// Refuses fields that could escape a cache or server path.
/// Invisible characters that reorder or hide text on a terminal: the
/// Unicode bidirectional controls and the zero-width format characters. An
/// index line is a signed but untrusted name; shown in a table it could
/// make one image look like another.
pub fn is_invisible_format(c: char) -> bool {
    matches!(c, '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}' | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

fn check_field(what: &str, v: &str, src: &str, line: usize) -> Result<()> {
    let bad = v.is_empty()
        || v == "."
        || v == ".."
        || v.len() > 128
        || v.chars().any(|c| {
            c == '/' || c == '\\' || c.is_control() || c.is_whitespace() || is_invisible_format(c)
        });
    if bad {
        return Err(Error::Malformed {
            what: format!("the {what} field of line {line}"),
            file: src.to_string(),
            why: format!("{v:?} is not a safe name"),
        });
    }
    Ok(())
}

fn check_path(v: &str, src: &str, line: usize) -> Result<()> {
    let ok = v.starts_with('/')
        && !v.split('/').any(|c| c == "..")
        && !v
            .chars()
            .any(|c| c == '\\' || c.is_control() || is_invisible_format(c));
    if !ok {
        return Err(Error::Malformed {
            what: format!("the path field of line {line}"),
            file: src.to_string(),
            why: format!("{v:?} must be an absolute server path without `..`"),
        });
    }
    Ok(())
}

impl Index {
    /// Parses index text. `src` names the file for errors. Lines with an
    /// empty build or path are skipped, as LXC's `--list` does; a line with
    /// unsafe names is an error.
    pub fn parse(text: &str, src: &str) -> Result<Index> {
        let mut images = Vec::new();
        for (n, line) in text.lines().enumerate() {
            let line = line.trim_end_matches('\r');
            if line.trim().is_empty() {
                continue;
            }
            // `read -r f1 .. f6`: the sixth field takes the rest of the line.
            let f: Vec<&str> = line.splitn(6, ';').collect();
            if f.len() < 6 || f[4].is_empty() || f[5].is_empty() {
                continue;
            }
            let n = n + 1;
            for (what, v) in ["dist", "release", "arch", "variant", "build"]
                .iter()
                .zip(&f)
            {
                check_field(what, v, src, n)?;
            }
            check_path(f[5], src, n)?;
            images.push(Image {
                id: ImageId {
                    dist: f[0].into(),
                    release: f[1].into(),
                    arch: f[2].into(),
                    variant: f[3].into(),
                    build: f[4].into(),
                },
                path: f[5].into(),
            });
        }
        Ok(Index { images })
    }

    /// Renders the index in the LXC format (`\n` after every line).
    pub fn render(&self) -> String {
        let mut out = String::new();
        for i in &self.images {
            out.push_str(&format!(
                "{};{};{};{};{};{}\n",
                i.dist, i.release, i.arch, i.variant, i.build, i.path
            ));
        }
        out
    }

    /// The first line that is the wanted image.
    pub fn find(&self, want: &Wanted) -> Option<&Image> {
        self.images.iter().find(|i| want.matches(i))
    }

    /// Lines matching the optional filters (case-insensitive, arch normalised).
    /// With no variant filter, every variant is listed.
    pub fn filter(
        &self,
        dist: Option<&str>,
        release: Option<&str>,
        arch: Option<&str>,
        variant: Option<&str>,
    ) -> Vec<&Image> {
        let arch = arch.map(normalize_arch);
        self.images
            .iter()
            .filter(|i| dist.is_none_or(|d| i.dist.eq_ignore_ascii_case(d)))
            .filter(|i| release.is_none_or(|r| i.release.eq_ignore_ascii_case(r)))
            .filter(|i| arch.as_deref().is_none_or(|a| i.arch == a))
            .filter(|i| variant.is_none_or(|v| i.variant.eq_ignore_ascii_case(v)))
            .collect()
    }

    /// A sentence for "no such image": close matches and the variants that exist.
    pub fn explain_missing(&self, want: &Wanted) -> String {
        let mut parts = Vec::new();
        let same = |i: &&Image| {
            i.dist.eq_ignore_ascii_case(&want.dist)
                && i.release.eq_ignore_ascii_case(&want.release)
                && i.arch == want.arch
        };
        let variants: Vec<&str> = self
            .images
            .iter()
            .filter(same)
            .map(|i| i.variant.as_str())
            .collect();
        if !variants.is_empty() {
            parts.push(format!(
                "variants of {} {} {}: {} (pick one with --variant)",
                want.dist,
                want.release,
                want.arch,
                variants.join(", ")
            ));
        } else {
            let arches: Vec<&str> = dedup(
                self.images
                    .iter()
                    .filter(|i| {
                        i.dist.eq_ignore_ascii_case(&want.dist)
                            && i.release.eq_ignore_ascii_case(&want.release)
                    })
                    .map(|i| i.arch.as_str()),
            );
            if !arches.is_empty() {
                parts.push(format!(
                    "{} {} exists for: {}",
                    want.dist,
                    want.release,
                    arches.join(", ")
                ));
            } else {
                let releases: Vec<&str> = dedup(
                    self.images
                        .iter()
                        .filter(|i| i.dist.eq_ignore_ascii_case(&want.dist))
                        .map(|i| i.release.as_str()),
                );
                if !releases.is_empty() {
                    parts.push(format!(
                        "releases of {}: {} (the release may have been retired)",
                        want.dist,
                        releases.join(", ")
                    ));
                }
            }
        }
        let close = self.closest(want, 5);
        if !close.is_empty() {
            parts.push(format!("closest matches: {}", close.join(", ")));
        }
        parts.join("; ")
    }

    /// Up to `n` `dist release arch variant` strings that look like `want`.
    pub fn closest(&self, want: &Wanted, n: usize) -> Vec<String> {
        let mut scored: Vec<(f64, String)> = self
            .images
            .iter()
            .map(|i| {
                let s = strsim::jaro_winkler(&i.dist.to_lowercase(), &want.dist.to_lowercase())
                    * 3.0
                    + strsim::jaro_winkler(&i.release.to_lowercase(), &want.release.to_lowercase())
                        * 2.0
                    + if i.arch == want.arch { 1.0 } else { 0.0 }
                    + if i.variant.eq_ignore_ascii_case(&want.variant) {
                        0.5
                    } else {
                        0.0
                    };
                (
                    s,
                    format!("{} {} {} {}", i.dist, i.release, i.arch, i.variant),
                )
            })
            .filter(|(s, _)| *s >= 4.0)
            .collect();
        scored.sort_by(|a, b| b.0.total_cmp(&a.0).then_with(|| a.1.cmp(&b.1)));
        scored.into_iter().take(n).map(|(_, s)| s).collect()
    }
}

fn dedup<'a>(it: impl Iterator<Item = &'a str>) -> Vec<&'a str> {
    let mut v: Vec<&str> = Vec::new();
    for s in it {
        if !v.contains(&s) {
            v.push(s);
        }
    }
    v
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "debian;bookworm;amd64;default;20240115_05:24;/images/debian/bookworm/amd64/default/20240115_05:24/\n\
        debian;bookworm;amd64;cloud;20240115_05:24;/images/debian/bookworm/amd64/cloud/20240115_05:24/\n\
        alpine;3.19;arm64;default;20240115_13:00;/images/alpine/3.19/arm64/default/20240115_13:00/\n\
        gentoo;current;amd64;openrc;20240115_04:18;/images/gentoo/current/amd64/openrc/20240115_04:18/\n\
        broken;x;amd64;default;;\n";

    #[test]
    fn parses_and_skips_incomplete_lines() {
        let idx = Index::parse(TEXT, "t").unwrap();
        assert_eq!(idx.images.len(), 4);
        assert_eq!(idx.images[0].build, "20240115_05:24");
        assert_eq!(Index::parse(&idx.render(), "t").unwrap().images, idx.images);
    }

    #[test]
    fn arch_aliases_and_case() {
        for (k, d) in [
            ("x86_64", "amd64"),
            ("aarch64", "arm64"),
            ("armv7l", "armhf"),
            ("i686", "i386"),
            ("ppc64le", "ppc64el"),
            ("riscv64", "riscv64"),
        ] {
            assert_eq!(normalize_arch(k), d);
        }
        let idx = Index::parse(TEXT, "t").unwrap();
        let w = Wanted::new("Debian", "BOOKWORM", "x86_64", "default");
        assert_eq!(idx.find(&w).unwrap().variant, "default");
        let w = Wanted::new("alpine", "3.19", "aarch64", "default");
        assert!(idx.find(&w).is_some());
    }

    #[test]
    fn refuses_unsafe_fields() {
        let bad = "debian;..;amd64;default;1;/images/x/\n";
        assert!(Index::parse(bad, "t").is_err());
        let bad = "debian;b;amd64;default;1;/images/../../etc/\n";
        assert!(Index::parse(bad, "t").is_err());
        let bad = "debian;b;amd64;default;1;images/x/\n";
        assert!(Index::parse(bad, "t").is_err());
        // A right-to-left override makes "debian\u{202e}nmuc" show as another name.
        for bad in [
            "debian\u{202e}x;b;amd64;default;1;/images/x/\n",
            "debian;b\u{200b};amd64;default;1;/images/x/\n",
            "debian;b;amd64;default;1;/images/\u{2066}x/\n",
            "debian;b;amd64;default;1\u{1b}[2J;/images/x/\n",
        ] {
            assert!(Index::parse(bad, "t").is_err(), "{bad:?}");
        }
    }

    #[test]
    fn explains_missing() {
        let idx = Index::parse(TEXT, "t").unwrap();
        let m = idx.explain_missing(&Wanted::new("gentoo", "current", "amd64", "default"));
        assert!(
            m.contains("variants of gentoo current amd64: openrc"),
            "{m}"
        );
        let m = idx.explain_missing(&Wanted::new("debain", "bookworm", "amd64", "default"));
        assert!(
            m.contains("closest matches: debian bookworm amd64 default"),
            "{m}"
        );
        let m = idx.explain_missing(&Wanted::new("debian", "buster", "amd64", "default"));
        assert!(m.contains("releases of debian: bookworm"), "{m}");
        let m = idx.explain_missing(&Wanted::new("alpine", "3.19", "amd64", "default"));
        assert!(m.contains("exists for: arm64"), "{m}");
    }

    #[test]
    fn filter_lists_all_variants() {
        let idx = Index::parse(TEXT, "t").unwrap();
        assert_eq!(idx.filter(Some("debian"), None, None, None).len(), 2);
        assert_eq!(idx.filter(None, None, Some("x86_64"), None).len(), 3);
        assert_eq!(idx.filter(None, None, None, Some("cloud")).len(), 1);
    }
}
