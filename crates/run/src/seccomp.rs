//! The container's seccomp filter (security.md (a) 22; issue 13): a deny
//! list at least as strict as LXC's and Incus's defaults, built with
//! libseccomp for the native ABI and the compat ones the kernel also runs
//! (on x86-64: i386 through `int 0x80`, and x32), so a 32-bit call cannot
//! slip past. Init loads it last thing before exec, and `attach` loads the
//! same one (recorded in the state at start) before its exec.
#![forbid(unsafe_code)]

use std::borrow::Cow;

use libseccomp::{
    ScmpAction, ScmpArch, ScmpArgCompare, ScmpCompareOp, ScmpFilterContext, ScmpSyscall,
};
use serde::{Deserialize, Serialize};

use crate::error::{Error, Result};

/// `[seccomp]` in a container's `config.toml`.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Seccomp {
    /// `default` (the deny list in [`DEFAULT_RULES`]) or `unconfined` (no
    /// filter at all).
    #[serde(default)]
    pub profile: Profile,
    /// Default rules to lift, by system call name (`keyctl`, say, for a
    /// container that needs the kernel keyring).
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub allow: Vec<String>,
    /// More system calls to refuse with `EPERM`.
    #[serde(default, skip_serializing_if = "Vec::is_empty")]
    pub deny: Vec<String>,
    /// Set by davit, not by hand, for a container with a read-only host
    /// bind ([`crate::ContainerConfig::seccomp_in_force`]): container root
    /// may not make a bind writable again. Its mounts are its own (made in
    /// its own mount namespace), so the kernel does not lock their flags;
    /// a `mount(MS_REMOUNT|MS_BIND)` without `MS_RDONLY` fails with
    /// `EPERM` and `mount_setattr` with `ENOSYS` (callers fall back to
    /// `mount`).
    #[serde(default, skip_serializing_if = "is_false")]
    pub keep_binds_read_only: bool,
}

fn is_false(b: &bool) -> bool {
    !*b
}

/// A filter profile.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "lowercase")]
pub enum Profile {
    /// [`DEFAULT_RULES`], less `allow`, plus `deny`.
    #[default]
    Default,
    /// No filter (`allow` and `deny` must be empty).
    Unconfined,
}

/// When a rule applies.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum When {
    /// Every call.
    Always,
    /// Calls whose argument `arg` has every bit of `mask` set.
    Flags {
        /// The argument's index.
        arg: u32,
        /// The bits.
        mask: u64,
    },
    /// Calls whose argument `arg`, masked with `mask`, is `value`.
    Masked {
        /// The argument's index.
        arg: u32,
        /// The bits looked at.
        mask: u64,
        /// What they must be.
        value: u64,
    },
}

/// One rule of the filter.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rule {
    /// The system call.
    pub syscall: Cow<'static, str>,
    /// The error it returns instead of running.
    pub errno: i32,
    /// Which calls.
    pub when: When,
}

const fn always(syscall: &'static str, errno: i32) -> Rule {
    Rule {
        syscall: Cow::Borrowed(syscall),
        errno,
        when: When::Always,
    }
}

const fn flags(syscall: &'static str, errno: i32, arg: u32, mask: u64) -> Rule {
    Rule {
        syscall: Cow::Borrowed(syscall),
        errno,
        when: When::Flags { arg, mask },
    }
}

/// `MNT_FORCE`, `umount2`'s second argument.
const MNT_FORCE: u64 = 1;
/// `SECCOMP_FILTER_FLAG_NEW_LISTENER`, `seccomp`'s second argument.
const NEW_LISTENER: u64 = 1 << 3;

/// The default deny list: LXC's (`kexec_load`, `open_by_handle_at`,
/// `init_module`, `finit_module`, `delete_module`, forced unmounts) and
/// Incus's additions; the keyring calls fail with `ENOSYS`, as LXC does for
/// systemd, which then does without; and no filter with a notify listener,
/// which would let the container's own supervisor answer for the kernel.
pub static DEFAULT_RULES: [Rule; 12] = [
    always("kexec_load", libc::EPERM),
    always("kexec_file_load", libc::EPERM),
    always("open_by_handle_at", libc::EPERM),
    always("init_module", libc::EPERM),
    always("finit_module", libc::EPERM),
    always("delete_module", libc::EPERM),
    flags("umount2", libc::EPERM, 1, MNT_FORCE),
    always("keyctl", libc::ENOSYS),
    always("add_key", libc::ENOSYS),
    always("request_key", libc::ENOSYS),
    flags("seccomp", libc::EPERM, 1, NEW_LISTENER),
    always("bpf", libc::EPERM),
];

impl Seccomp {
    /// Names known to libseccomp, `allow` only lifting default rules, no
    /// name in both lists, and nothing to adjust when unconfined.
    ///
    /// # Errors
    /// [`Error::ConfigInvalid`] naming the entry.
    pub fn validate(&self) -> Result<()> {
        let bad = |reason: String| Err(Error::ConfigInvalid { reason });
        if self.profile == Profile::Unconfined && !(self.allow.is_empty() && self.deny.is_empty()) {
            return bad("seccomp: allow and deny need profile = \"default\"".into());
        }
        for a in &self.allow {
            if !DEFAULT_RULES.iter().any(|r| r.syscall == a.as_str()) {
                let names: Vec<&str> = DEFAULT_RULES.iter().map(|r| r.syscall.as_ref()).collect();
                return bad(format!(
                    "seccomp: allow = {a:?} is not a default rule (they are {})",
                    names.join(", ")
                ));
            }
        }
        for d in &self.deny {
            if ScmpSyscall::from_name(d).is_err() {
                return bad(format!("seccomp: deny = {d:?} is not a system call name"));
            }
            if self.allow.contains(d) {
                return bad(format!("seccomp: {d:?} is both allowed and denied"));
            }
        }
        Ok(())
    }

    /// The rules in force.
    pub fn rules(&self) -> Vec<Rule> {
        if self.profile == Profile::Unconfined {
            return Vec::new();
        }
        let mut v: Vec<Rule> = DEFAULT_RULES
            .iter()
            .filter(|r| !self.allow.iter().any(|a| *a == r.syscall))
            .cloned()
            .collect();
        v.extend(self.deny.iter().map(|d| Rule {
            syscall: Cow::Owned(d.clone()),
            errno: libc::EPERM,
            when: When::Always,
        }));
        if self.keep_binds_read_only {
            let (remount, bind, rdonly) = (libc::MS_REMOUNT, libc::MS_BIND, libc::MS_RDONLY);
            v.push(Rule {
                syscall: Cow::Borrowed("mount"),
                errno: libc::EPERM,
                when: When::Masked {
                    arg: 3,
                    mask: remount | bind | rdonly,
                    value: remount | bind,
                },
            });
            v.push(always("mount_setattr", libc::ENOSYS));
        }
        v
    }

    /// One line for `info` and `create`: `default (12 rules)`, with what
    /// was lifted and added, or `unconfined`.
    pub fn summary(&self) -> String {
        if self.profile == Profile::Unconfined {
            return "unconfined (no filter)".into();
        }
        let mut s = format!("default ({} rules)", self.rules().len());
        if !self.allow.is_empty() {
            s += &format!(", allowed: {}", self.allow.join(" "));
        }
        if !self.deny.is_empty() {
            s += &format!(", denied: {}", self.deny.join(" "));
        }
        s
    }

    /// The filter, or `None` when unconfined. `no_new_privs` is left as it
    /// is: init may not set it (setuid programs inside keep working), and
    /// may load a filter without it as root of its user namespace.
    ///
    /// # Errors
    /// [`Error::ConfigInvalid`] for an unknown name; [`Error::Unsupported`]
    /// when libseccomp refuses an architecture or a rule.
    pub(crate) fn build(&self) -> Result<Option<ScmpFilterContext>> {
        self.validate()?;
        if self.profile == Profile::Unconfined {
            return Ok(None);
        }
        let fail = |what: String| {
            move |e: libseccomp::error::SeccompError| Error::Unsupported {
                what: format!("seccomp: {what}: {e}"),
            }
        };
        let mut ctx =
            ScmpFilterContext::new(ScmpAction::Allow).map_err(fail("a new filter".into()))?;
        ctx.set_ctl_nnp(false)
            .map_err(fail("leaving no_new_privs alone".into()))?;
        for arch in compat_arches() {
            ctx.add_arch(arch)
                .map_err(fail(format!("adding architecture {arch:?}")))?;
        }
        for r in self.rules() {
            let sc = ScmpSyscall::from_name(&r.syscall).map_err(|_| Error::ConfigInvalid {
                reason: format!("seccomp: {:?} is not a system call name", r.syscall),
            })?;
            let act = ScmpAction::Errno(r.errno);
            match r.when {
                When::Always => ctx.add_rule(act, sc),
                When::Flags { arg, mask } => ctx.add_rule_conditional(
                    act,
                    sc,
                    &[ScmpArgCompare::new(
                        arg,
                        ScmpCompareOp::MaskedEqual(mask),
                        mask,
                    )],
                ),
                When::Masked { arg, mask, value } => ctx.add_rule_conditional(
                    act,
                    sc,
                    &[ScmpArgCompare::new(
                        arg,
                        ScmpCompareOp::MaskedEqual(mask),
                        value,
                    )],
                ),
            }
            .map_err(fail(format!("rule for {}", r.syscall)))?;
        }
        Ok(Some(ctx))
    }
}

/// The ABIs besides the native one that this kernel may run: every one
/// must be in the filter, or its calls are judged by no rule.
fn compat_arches() -> Vec<ScmpArch> {
    match ScmpArch::native() {
        ScmpArch::X8664 => vec![ScmpArch::X86, ScmpArch::X32],
        ScmpArch::Aarch64 => vec![ScmpArch::Arm],
        _ => Vec::new(),
    }
}

/// Load `filter` into this process: the last step before exec.
pub(crate) fn load(filter: &ScmpFilterContext) -> Result<()> {
    filter.load().map_err(|e| {
        Error::sys(
            "seccomp(SECCOMP_SET_MODE_FILTER)",
            nix::errno::Errno::from_raw(e.sysrawrc().map(i32::abs).unwrap_or(libc::EINVAL)),
        )
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn config_lifts_and_adds_rules_and_refuses_nonsense() {
        let d = Seccomp::default();
        assert_eq!(d.rules().len(), DEFAULT_RULES.len());
        assert!(d.summary().starts_with("default (12 rules)"));
        let c = Seccomp {
            profile: Profile::Default,
            allow: vec!["keyctl".into()],
            deny: vec!["mlock".into()],
            keep_binds_read_only: false,
        };
        c.validate().unwrap();
        let names: Vec<String> = c.rules().iter().map(|r| r.syscall.to_string()).collect();
        assert!(!names.iter().any(|n| n == "keyctl") && names.iter().any(|n| n == "mlock"));
        assert_eq!(
            c.summary(),
            "default (12 rules), allowed: keyctl, denied: mlock"
        );
        for bad in [
            Seccomp {
                allow: vec!["read".into()],
                ..Seccomp::default()
            },
            Seccomp {
                deny: vec!["no_such_call".into()],
                ..Seccomp::default()
            },
            Seccomp {
                profile: Profile::Unconfined,
                deny: vec!["mlock".into()],
                ..Seccomp::default()
            },
        ] {
            assert!(bad.validate().is_err(), "{bad:?}");
        }
        assert!(Seccomp {
            profile: Profile::Unconfined,
            ..Seccomp::default()
        }
        .build()
        .unwrap()
        .is_none());
        assert!(d.build().unwrap().is_some());
        let ro = Seccomp {
            keep_binds_read_only: true,
            ..Seccomp::default()
        };
        assert_eq!(ro.rules().len(), DEFAULT_RULES.len() + 2);
        assert!(ro.build().unwrap().is_some());
    }
}
