#!/usr/bin/env python3
"""The layering rules of docs/ARCHITECTURE.md, checked (scripts/test runs it).

1. The crate graph is the one the doc draws: each crate depends only on
   the davit crates listed for it in ALLOWED (dev-dependencies aside).
2. No module imports another that imports it back, in any crate. A module
   is a file under src/ (foo.rs or foo/mod.rs is foo, foo/bar.rs is
   foo::bar); A -> B when A's code (tests aside) names crate::B or, from a
   sibling, super::B. References across top-level modules count between
   the top-level ones, so a child of `cgroup` naming `handover` while
   `handover` names `cgroup` is a cycle too.

Exit status 1 names every breach.

    python3 scripts/lib/layering.py            # from the repository root
    python3 scripts/lib/layering.py --self-test
"""
import os, re, sys
def modname(src, path):
    rel=os.path.relpath(path, src)[:-3]
    parts=rel.split('/')
    if parts[-1]=='mod': parts=parts[:-1]
    if parts in (['lib'],['main']): return ''
    return '::'.join(parts)
def scan(src):
    mods={}
    for root,_,files in os.walk(src):
        for f in files:
            if f.endswith('.rs'):
                p=os.path.join(root,f); mods[modname(src,p)]=p
    names=set(mods)
    edges={m:set() for m in mods}
    for m,p in mods.items():
        text=open(p).read()
        # drop test modules roughly: cut at '#[cfg(test)]\nmod tests'
        i=text.find('#[cfg(test)]\nmod ')
        if i>=0: text=text[:i]
        text=re.sub(r'//[^\n]*','',text)
        parent=m.rsplit('::',1)[0] if '::' in m else ''
        for mo in re.finditer(r'\b(crate|super)((?:::[a-z_][a-z0-9_]*)+)',text):
            path=mo.group(2).strip(':').split('::')
            if mo.group(1)=='super':
                base=parent.split('::') if parent else []
                path=base+path
            # longest prefix that is a module
            tgt=None
            for k in range(len(path),0,-1):
                cand='::'.join(path[:k])
                if cand in names: tgt=cand; break
            if tgt is None or tgt==m: continue
            # ignore references to own ancestors (parent mod) and descendants
            if m.startswith(tgt+'::') or tgt.startswith(m+'::') : continue
            if m.split('::')[0]!=tgt.split('::')[0]:
                # across top-level modules: compare the top-level ones
                edges.setdefault(m.split('::')[0],set()).add(tgt.split('::')[0])
            else:
                edges[m].add(tgt)
    return edges
# What each crate may depend on (docs/ARCHITECTURE.md draws the same graph).
ALLOWED = {
    "davit": {"davit-fetch", "davit-rootfs", "davit-run", "davit-store", "davit-term", "davit-types"},
    "davit-store": {"davit-rootfs", "davit-run", "davit-types"},
    "davit-fetch": {"davit-types"},
    "davit-rootfs": {"davit-types"},
    "davit-run": {"davit-types"},
    "davit-term": set(),
    "davit-types": set(),
    "davit-testkit": set(),
}

def crate_deps(toml_path):
    """(package name, the davit-* crates in [dependencies])."""
    name, deps, section = None, set(), None
    for line in open(toml_path):
        line = line.strip()
        if line.startswith("["):
            section = line.strip("[]")
            continue
        m = re.match(r'name\s*=\s*"([^"]+)"', line)
        if section == "package" and m:
            name = m.group(1)
        m = re.match(r'(davit-[a-z]+)\b', line)
        if section == "dependencies" and m:
            deps.add(m.group(1))
    return name, deps

def cycles(src):
    e = scan(src)
    out, seen = [], set()
    for a in e:
        for b in e[a]:
            if a and b and a in e.get(b, ()) and (b, a) not in seen:
                seen.add((a, b))
                out.append(f"{src}: {a} <-> {b}")
    return out

def check(root):
    bad = []
    tomls = [os.path.join(root, "Cargo.toml")] + [
        os.path.join(root, "crates", c, "Cargo.toml")
        for c in sorted(os.listdir(os.path.join(root, "crates")))
        if os.path.isfile(os.path.join(root, "crates", c, "Cargo.toml"))
    ]
    for t in tomls:
        name, deps = crate_deps(t)
        if name not in ALLOWED:
            bad.append(f"{t}: crate {name} is not in ALLOWED (add it, and to docs/ARCHITECTURE.md)")
            continue
        for d in sorted(deps - ALLOWED[name]):
            bad.append(f"{t}: {name} may not depend on {d} (docs/ARCHITECTURE.md)")
        src = os.path.join(os.path.dirname(t), "src")
        bad += cycles(src)
    return bad

def self_test():
    import tempfile
    with tempfile.TemporaryDirectory() as d:
        os.makedirs(os.path.join(d, "src"))
        open(os.path.join(d, "src", "a.rs"), "w").write("use crate::b::X;\n")
        open(os.path.join(d, "src", "b.rs"), "w").write("fn f() { crate::a::g() }\n")
        open(os.path.join(d, "src", "c.rs"), "w").write("use crate::a::Y;\n")
        got = cycles(os.path.join(d, "src"))
        assert len(got) == 1 and "a <-> b" in got[0].replace("b <-> a", "a <-> b"), got
        os.makedirs(os.path.join(d, "src", "p"))
        open(os.path.join(d, "src", "p", "mod.rs"), "w").write("mod k;\n")
        open(os.path.join(d, "src", "p", "k.rs"), "w").write("use crate::c::Z;\n")
        open(os.path.join(d, "src", "c.rs"), "w").write("use crate::p::Q;\n")
        got = cycles(os.path.join(d, "src"))
        assert any("c <-> p" in g or "p <-> c" in g for g in got), got
    print("layering self-test: ok")

if __name__ == "__main__":
    if sys.argv[1:] == ["--self-test"]:
        self_test()
        sys.exit(0)
    root = sys.argv[1] if len(sys.argv) > 1 else "."
    bad = check(root)
    for b in bad:
        print(b)
    if bad:
        sys.exit(1)
    print("layering: the crate graph and every module graph are one way")
