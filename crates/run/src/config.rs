//! The container configuration (`containers/NAME/config`, TOML).
#![forbid(unsafe_code)]

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// One container's configuration, as davit writes it at `create` and reads
/// at `start`.
///
/// ```toml
/// name = "web"
/// rootfs = "/var/lib/davit/containers/web/rootfs"
/// hostname = "web"
///
/// [image]
/// dist = "debian"
/// release = "bookworm"
/// arch = "amd64"
/// variant = "default"
/// build = "20250101_05:24"
///
/// [[idmap.uid]]
/// container = 0
/// host = 100000
/// len = 65536
///
/// [[idmap.gid]]
/// container = 0
/// host = 100000
/// len = 65536
///
/// [limits]
/// memory = 536870912
/// pids = 512
/// cpus = 1.5
///
/// [network]
/// mode = "none"
/// ```
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct ContainerConfig {
    /// The container name: letters, digits, `-`, `_` and `.`, at most 64
    /// bytes. It names the state directory and the cgroup, and is the default
    /// hostname.
    pub name: String,
    /// Absolute path of the unpacked root filesystem on the host. Its files
    /// are owned by the shifted ids of [`ContainerConfig::idmap`].
    pub rootfs: PathBuf,
    /// Where the rootfs came from; informational, shown by `info`.
    #[serde(default)]
    pub image: ImageId,
    /// The user-namespace id map. Required unless `privileged`.
    #[serde(default)]
    pub idmap: IdMap,
    /// Run without a user namespace: container root is host root. Off by
    /// default; device nodes are then created with `mknod`.
    #[serde(default)]
    pub privileged: bool,
    /// The hostname inside the container; defaults to `name` when absent.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hostname: Option<String>,
    /// The init command and its arguments, resolved inside the container.
    #[serde(default = "default_init")]
    pub init: Vec<String>,
    /// Started by `davit autostart` (at boot, through the shipped systemd
    /// unit), as LXC's `lxc.start.auto`.
    #[serde(default, skip_serializing_if = "is_false")]
    pub autostart: bool,
    /// `davit autostart` starts lower orders first and stops them last
    /// (`lxc.start.order`); equal orders go by name.
    #[serde(default, skip_serializing_if = "is_zero_i32")]
    pub autostart_order: i32,
    /// Seconds `davit autostart` waits after starting this container before
    /// the next one (`lxc.start.delay`).
    #[serde(default, skip_serializing_if = "is_zero_u64")]
    pub autostart_delay: u64,
    /// Terminals besides the console for a detached start (`lxc.tty.max`):
    /// `/dev/tty1..N`, each a pseudo-terminal of the container's own that
    /// the monitor holds for `davit console NAME --tty N`; init learns
    /// them as `container_ttys` (systemd starts a getty on each).
    #[serde(default = "default_ttys", skip_serializing_if = "is_default_ttys")]
    pub ttys: u32,
    /// Extra environment for init, on top of `PATH`, `TERM`, `HOME` and
    /// `container=davit`.
    #[serde(default)]
    pub env: BTreeMap<String, String>,
    /// Extra mounts, applied after `/proc`, `/sys` and `/dev`, in order.
    #[serde(default)]
    pub mounts: Vec<MountEntry>,
    /// Resource limits; each absent limit is not set.
    #[serde(default)]
    pub limits: Limits,
    /// Network setup; `none` gives a network namespace with only `lo`.
    #[serde(default)]
    pub network: Network,
    /// How the root filesystem is stored: a plain directory (`rootfs` is the
    /// tree) or an overlay of a shared read-only base (`rootfs` is only the
    /// mount point).
    #[serde(default, skip_serializing_if = "Storage::is_dir")]
    pub storage: Storage,
    /// The seccomp filter: the default deny list unless set otherwise.
    #[serde(default, skip_serializing_if = "is_default_seccomp")]
    pub seccomp: crate::seccomp::Seccomp,
}

/// Terminals a detached container gets unless its config says otherwise,
/// as LXC's download templates set `lxc.tty.max = 4`.
pub const DEFAULT_TTYS: u32 = 4;

/// The most `ttys` may ask for.
pub const MAX_TTYS: u32 = 16;

fn default_ttys() -> u32 {
    DEFAULT_TTYS
}

fn is_default_ttys(n: &u32) -> bool {
    *n == DEFAULT_TTYS
}

fn is_false(b: &bool) -> bool {
    !*b
}

fn is_zero_i32(n: &i32) -> bool {
    *n == 0
}

fn is_zero_u64(n: &u64) -> bool {
    *n == 0
}

fn is_default_seccomp(s: &crate::seccomp::Seccomp) -> bool {
    *s == crate::seccomp::Seccomp::default()
}

/// The storage backend of a container.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Backend {
    /// `rootfs` is a full, private copy of the image.
    #[default]
    Dir,
    /// overlayfs: a shared read-only base as the lower layer, and a private
    /// upper and work directory.
    Overlay,
}

impl Backend {
    /// `dir` or `overlay`.
    pub fn as_str(self) -> &'static str {
        match self {
            Backend::Dir => "dir",
            Backend::Overlay => "overlay",
        }
    }
}

/// Where an overlay container's layers are.
///
/// ```toml
/// [storage]
/// backend = "overlay"
/// base = "/var/lib/davit/bases/debian_bookworm_amd64_default_20250101-05-24_raw/rootfs"
/// upper = "/var/lib/davit/containers/web/overlay/upper"
/// work = "/var/lib/davit/containers/web/overlay/work"
/// idmapped_lower = true
/// ```
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Storage {
    /// The backend.
    #[serde(default)]
    pub backend: Backend,
    /// The read-only base tree (overlay only), shared with other containers.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub base: Option<PathBuf>,
    /// The container's own upper directory (overlay only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub upper: Option<PathBuf>,
    /// overlayfs's work directory, on the upper's filesystem (overlay only).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub work: Option<PathBuf>,
    /// The base holds the image's own, unshifted ids and is attached as an
    /// idmapped mount through the container's user namespace (root only).
    /// Otherwise its ids are already shifted into the container's range.
    #[serde(default)]
    pub idmapped_lower: bool,
}

impl Storage {
    /// Whether this is the plain `dir` backend.
    pub fn is_dir(&self) -> bool {
        self.backend == Backend::Dir
    }

    /// The base, upper and work directories of an overlay container.
    ///
    /// # Errors
    /// [`Error::ConfigInvalid`] if one is missing or relative.
    pub fn overlay_dirs(&self) -> Result<(&Path, &Path, &Path)> {
        fn get<'a>(what: &str, p: &'a Option<PathBuf>) -> Result<&'a Path> {
            match p {
                Some(p) if p.is_absolute() => Ok(p.as_path()),
                _ => Err(Error::ConfigInvalid {
                    reason: format!(
                        "storage.{what} must be an absolute path for the overlay backend"
                    ),
                }),
            }
        }
        Ok((
            get("base", &self.base)?,
            get("upper", &self.upper)?,
            get("work", &self.work)?,
        ))
    }
}

fn default_init() -> Vec<String> {
    vec!["/sbin/init".to_owned()]
}

// The image a container was created from, its id map and its extra
// mounts are the shared types (davit-types), so that the store, the
// unpacker and this crate name them alike.
pub use davit_types::{IdMap, IdRange, ImageId, MountEntry};

/// The pids limit a container gets when neither the admin (`--pids`) nor
/// the image's LXC config sets one: a system container's few hundred tasks
/// fit many times over, and no container alone can empty the host's pid
/// table (`pid_max` is 32768 or more). `--pids 0` asks for none.
pub const DEFAULT_PIDS: u64 = 4096;

/// Resource limits, applied through the cgroup before init runs.
#[derive(Debug, Clone, Default, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Limits {
    /// Memory limit in bytes (swap is limited to zero where the host allows).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub memory: Option<u64>,
    /// Maximum number of tasks (processes and threads).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub pids: Option<u64>,
    /// CPU bandwidth in CPUs, e.g. `1.5` (a quota of 150 ms per 100 ms).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub cpus: Option<f64>,
}

impl Limits {
    /// Whether any limit is set.
    pub fn is_empty(&self) -> bool {
        self.memory.is_none() && self.pids.is_none() && self.cpus.is_none()
    }
}

/// How the container is networked.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum NetworkMode {
    /// A network namespace with only `lo`.
    #[default]
    None,
    /// A veth pair to a host bridge (root only).
    Bridge,
    /// Rootless user-mode networking (pasta or slirp4netns).
    User,
}

/// Network settings; only `mode` is used by this crate today.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Network {
    /// The mode.
    #[serde(default)]
    pub mode: NetworkMode,
    /// Bridge name for `bridge` mode (default `davitbr0`).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub bridge: Option<String>,
    /// Host-side veth name for `bridge` mode.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub veth: Option<String>,
    /// Static address with prefix, e.g. `10.0.3.5/24`.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub address: Option<String>,
    /// Default gateway.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub gateway: Option<String>,
    /// MAC address of the container side.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub hwaddr: Option<String>,
    /// Host ports forwarded to the container (`--publish`), set up at
    /// start and removed at stop.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub publish: Vec<Publish>,
}

/// The transport of a published port.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Proto {
    /// TCP (the default).
    #[default]
    Tcp,
    /// UDP.
    Udp,
}

impl Proto {
    /// `tcp` or `udp`.
    pub fn as_str(self) -> &'static str {
        match self {
            Proto::Tcp => "tcp",
            Proto::Udp => "udp",
        }
    }
}

/// One forwarded port: `[HOSTIP:]HOSTPORT:PORT[/tcp|udp]`, as
/// `[[network.publish]]` in config.toml.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Publish {
    /// The host address it listens on (`None`: every address of the host).
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub host_ip: Option<std::net::IpAddr>,
    /// The host port.
    pub host_port: u16,
    /// The container's port.
    pub port: u16,
    /// TCP or UDP.
    #[serde(default)]
    pub proto: Proto,
}

impl std::str::FromStr for Publish {
    type Err = String;

    /// `8080:80`, `8053:53/udp`, `127.0.0.1:8080:80`, `[::1]:8080:80/tcp`.
    fn from_str(s: &str) -> std::result::Result<Publish, String> {
        let bad =
            |why: &str| format!("--publish {s:?}: {why} (give [HOSTIP:]HOSTPORT:PORT[/tcp|udp])");
        let (rest, proto) = match s.rsplit_once('/') {
            Some((r, "tcp")) => (r, Proto::Tcp),
            Some((r, "udp")) => (r, Proto::Udp),
            Some(_) => return Err(bad("the protocol is tcp or udp")),
            None => (s, Proto::Tcp),
        };
        let (front, port) = rest
            .rsplit_once(':')
            .ok_or_else(|| bad("no container port"))?;
        let (host_ip, host_port) = match front.rsplit_once(':') {
            Some((ip, hp)) => {
                let ip = ip
                    .strip_prefix('[')
                    .and_then(|i| i.strip_suffix(']'))
                    .unwrap_or(ip);
                let ip: std::net::IpAddr = ip.parse().map_err(|_| bad("not an IP address"))?;
                (Some(ip), hp)
            }
            None => (None, front),
        };
        let num = |p: &str| match p.parse::<u16>() {
            Ok(n) if n > 0 => Ok(n),
            _ => Err(bad("ports are 1 to 65535")),
        };
        Ok(Publish {
            host_ip,
            host_port: num(host_port)?,
            port: num(port)?,
            proto,
        })
    }
}

impl std::fmt::Display for Publish {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self.host_ip {
            Some(std::net::IpAddr::V6(ip)) => write!(f, "[{ip}]:")?,
            Some(ip) => write!(f, "{ip}:")?,
            None => {}
        }
        write!(
            f,
            "{}:{}/{}",
            self.host_port,
            self.port,
            self.proto.as_str()
        )
    }
}

/// Whether `name` is a valid container name.
pub fn valid_name(name: &str) -> bool {
    !name.is_empty()
        && name.len() <= 64
        && !name.starts_with('.')
        && name
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'-' | b'_' | b'.'))
}

impl ContainerConfig {
    /// A config with defaults for everything but the name and rootfs.
    pub fn new(name: impl Into<String>, rootfs: impl Into<PathBuf>) -> Self {
        ContainerConfig {
            name: name.into(),
            rootfs: rootfs.into(),
            image: ImageId::default(),
            idmap: IdMap::default(),
            privileged: false,
            hostname: None,
            init: default_init(),
            autostart: false,
            autostart_order: 0,
            autostart_delay: 0,
            ttys: DEFAULT_TTYS,
            storage: Storage::default(),
            env: BTreeMap::new(),
            mounts: Vec::new(),
            limits: Limits::default(),
            network: Network::default(),
            seccomp: crate::seccomp::Seccomp::default(),
        }
    }

    /// Parse TOML text; `path` only names the source in errors.
    ///
    /// # Errors
    /// [`Error::ConfigParse`] for bad TOML, [`Error::ConfigInvalid`] for
    /// values that parse but cannot work (see [`ContainerConfig::validate`]).
    pub fn from_toml(text: &str, path: &Path) -> Result<Self> {
        let cfg: ContainerConfig = toml::from_str(text).map_err(|e| Error::ConfigParse {
            path: path.to_owned(),
            source: Box::new(e),
        })?;
        cfg.validate()?;
        Ok(cfg)
    }

    /// Read and parse a config file.
    ///
    /// # Errors
    /// [`Error::Read`], or as [`ContainerConfig::from_toml`].
    pub fn load(path: &Path) -> Result<Self> {
        let text = std::fs::read_to_string(path).map_err(|source| Error::Read {
            path: path.to_owned(),
            source,
        })?;
        Self::from_toml(&text, path)
    }

    /// The seccomp policy init and `attach` run under: the configured one,
    /// with [`crate::seccomp::Seccomp::keep_binds_read_only`] when a bind
    /// is read only and the container has a user namespace (a privileged
    /// container's root could undo anything anyway).
    pub fn seccomp_in_force(&self) -> crate::seccomp::Seccomp {
        let mut s = self.seccomp.clone();
        s.keep_binds_read_only = s.profile == crate::seccomp::Profile::Default
            && !self.privileged
            && self
                .mounts
                .iter()
                .any(|m| m.is_bind() && m.options().any(|o| o == "ro"));
        s
    }

    /// Serialise to TOML.
    ///
    /// # Errors
    /// [`Error::ConfigSerialize`] (only for values TOML cannot hold).
    pub fn to_toml(&self) -> Result<String> {
        toml::to_string(self).map_err(|source| Error::ConfigSerialize { source })
    }

    /// The hostname to set: `hostname`, or the name.
    pub fn hostname(&self) -> &str {
        self.hostname.as_deref().unwrap_or(&self.name)
    }

    /// Check the values: a valid name and hostname, an absolute rootfs, a
    /// non-empty init, absolute mount targets, positive limits, and a valid
    /// id map unless privileged.
    ///
    /// # Errors
    /// [`Error::ConfigInvalid`] or [`Error::IdMap`].
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::ConfigInvalid { reason });
        if !valid_name(&self.name) {
            return bad(format!("container name {:?} is not valid", self.name));
        }
        let h = self.hostname();
        if h.is_empty() || h.len() > 64 {
            return bad(format!("hostname {h:?} must be 1 to 64 bytes"));
        }
        if !self.rootfs.is_absolute() {
            return bad(format!("rootfs {} is not absolute", self.rootfs.display()));
        }
        if self.init.is_empty() || self.init[0].is_empty() {
            return bad("init is empty".to_owned());
        }
        for m in &self.mounts {
            if !m.target.is_absolute() {
                return bad(format!(
                    "mount target {} is not absolute",
                    m.target.display()
                ));
            }
        }
        if self.ttys > MAX_TTYS {
            return bad(format!("ttys = {} is more than {MAX_TTYS}", self.ttys));
        }
        if self.limits.memory == Some(0) || self.limits.pids == Some(0) {
            return bad("a memory or pids limit of 0 cannot run anything".to_owned());
        }
        if let Some(c) = self.limits.cpus {
            if !(c.is_finite() && c > 0.0) {
                return bad(format!("cpus = {c} must be a positive number"));
            }
        }
        if !self.privileged {
            self.idmap.validate()?;
        }
        self.seccomp.validate()?;
        if self.storage.backend == Backend::Overlay {
            self.storage.overlay_dirs()?;
            if self.storage.idmapped_lower && self.privileged {
                return bad(
                    "an idmapped lower layer needs a user namespace; a privileged container has none"
                        .to_owned(),
                );
            }
        } else if self.storage.base.is_some() || self.storage.idmapped_lower {
            return bad(
                "storage.base and storage.idmapped_lower need backend = \"overlay\"".to_owned(),
            );
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn publish_specs_parse_and_print_back() {
        for (spec, shown) in [
            ("8080:80", "8080:80/tcp"),
            ("8053:53/udp", "8053:53/udp"),
            ("127.0.0.1:8080:80", "127.0.0.1:8080:80/tcp"),
            ("[::1]:8080:80/tcp", "[::1]:8080:80/tcp"),
        ] {
            let p: Publish = spec.parse().unwrap();
            assert_eq!(p.to_string(), shown);
            assert_eq!(p.to_string().parse::<Publish>().unwrap(), p);
        }
        for bad in [
            "80",
            "0:80",
            "8080:70000",
            "8080:80/sctp",
            "host:8080:80",
            ":80",
        ] {
            let e = bad.parse::<Publish>().unwrap_err();
            assert!(e.contains("HOSTPORT:PORT"), "{bad}: {e}");
        }
        let p: Publish = "[::1]:8080:80".parse().unwrap();
        assert_eq!(p.host_ip, Some("::1".parse().unwrap()));
    }

    #[test]
    fn overlay_storage_round_trips_and_is_checked() {
        let mut c = full();
        c.storage = Storage {
            backend: Backend::Overlay,
            base: Some("/b/rootfs".into()),
            upper: Some("/c/overlay/upper".into()),
            work: Some("/c/overlay/work".into()),
            idmapped_lower: true,
        };
        let text = c.to_toml().unwrap();
        assert!(
            text.contains("[storage]") && text.contains("idmapped_lower = true"),
            "{text}"
        );
        let back = ContainerConfig::from_toml(&text, Path::new("t")).unwrap();
        assert_eq!(back, c);
        back.validate().unwrap();
        // A dir container's config does not mention storage at all.
        assert!(!full().to_toml().unwrap().contains("storage"));
        c.storage.work = Some("relative".into());
        assert!(c
            .validate()
            .unwrap_err()
            .to_string()
            .contains("storage.work"));
        c.storage.work = Some("/w".into());
        c.privileged = true;
        assert!(c.validate().unwrap_err().to_string().contains("idmapped"));
        c.privileged = false;
        c.storage.backend = Backend::Dir;
        assert!(c.validate().is_err());
    }

    fn full() -> ContainerConfig {
        let mut c = ContainerConfig::new("web", "/var/lib/davit/containers/web/rootfs");
        c.image = ImageId {
            dist: "debian".into(),
            release: "bookworm".into(),
            arch: "amd64".into(),
            variant: "default".into(),
            build: "20250101_05:24".into(),
        };
        let r = IdRange {
            container: 0,
            host: 100_000,
            len: 65536,
        };
        c.idmap = IdMap {
            uid: vec![r],
            gid: vec![r],
        };
        c.hostname = Some("www".into());
        c.init = vec!["/bin/sh".into(), "-c".into(), "exit 7".into()];
        c.autostart = true;
        c.autostart_order = -3;
        c.autostart_delay = 2;
        c.env.insert("LANG".into(), "C.UTF-8".into());
        c.mounts.push(MountEntry {
            source: "/srv/data".into(),
            target: "/data".into(),
            fstype: "bind".into(),
            options: "ro,nosuid".into(),
        });
        c.limits = Limits {
            memory: Some(512 << 20),
            pids: Some(512),
            cpus: Some(1.5),
        };
        c.network = Network {
            mode: NetworkMode::Bridge,
            bridge: Some("davitbr0".into()),
            ..Network::default()
        };
        c
    }

    #[test]
    fn round_trip_full() {
        let c = full();
        let text = c.to_toml().unwrap();
        let back = ContainerConfig::from_toml(&text, Path::new("t")).unwrap();
        assert_eq!(c, back);
    }

    #[test]
    fn round_trip_minimal_defaults() {
        let text = "name = \"a\"\nrootfs = \"/r\"\nprivileged = true\n";
        let c = ContainerConfig::from_toml(text, Path::new("t")).unwrap();
        assert_eq!(c.init, vec!["/sbin/init"]);
        assert_eq!(c.network.mode, NetworkMode::None);
        assert!(c.limits.is_empty());
        assert_eq!(c.hostname(), "a");
        let back = ContainerConfig::from_toml(&c.to_toml().unwrap(), Path::new("t")).unwrap();
        assert_eq!(c, back);
    }

    #[test]
    fn parses_documented_example() {
        let text = r#"
name = "web"
rootfs = "/var/lib/davit/containers/web/rootfs"
[image]
dist = "debian"
release = "bookworm"
arch = "amd64"
[[idmap.uid]]
container = 0
host = 100000
len = 65536
[[idmap.gid]]
container = 0
host = 100000
len = 65536
[[mounts]]
source = "tmpfs"
target = "/run"
fstype = "tmpfs"
options = "nosuid,size=10m"
[limits]
memory = 536870912
pids = 512
cpus = 1.5
[network]
mode = "user"
"#;
        let c = ContainerConfig::from_toml(text, Path::new("t")).unwrap();
        assert_eq!(c.idmap.host_uid(0), Some(100_000));
        assert_eq!(c.idmap.host_uid(65535), Some(165_535));
        assert_eq!(c.idmap.host_uid(65536), None);
        assert_eq!(c.idmap.uid_map_text(), "0 100000 65536\n");
        assert_eq!(c.network.mode, NetworkMode::User);
        assert_eq!(c.mounts[0].fstype, "tmpfs");
    }

    #[test]
    fn rejects_bad_values() {
        let e = ContainerConfig::from_toml(
            "name = \"a\"\nrootfs = \"/r\"\nbogus = 1\n",
            Path::new("t"),
        )
        .unwrap_err();
        assert_eq!(e.kind(), crate::ErrorKind::Config);
        let mut c = full();
        c.idmap.uid[0].host = 0;
        assert_eq!(c.validate().unwrap_err().kind(), crate::ErrorKind::IdMap);
        let mut c = full();
        c.idmap.uid[0].len = 1000;
        assert!(c.validate().is_err());
        let mut c = full();
        c.name = "../x".into();
        assert_eq!(c.validate().unwrap_err().kind(), crate::ErrorKind::Config);
        let mut c = full();
        c.limits.cpus = Some(-1.0);
        assert!(c.validate().is_err());
        let mut c = full();
        c.rootfs = "rel".into();
        assert!(c.validate().is_err());
    }
}
