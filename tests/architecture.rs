//! The layering rule, checked: every `crate::` (and `super::`) path in `src/` must be allowed by
//! the map in `docs/architecture.txt`. Core at the bottom; server, agent and CLI side by side;
//! agent and CLI never import server code; the HTTP side and the relay meet only through the router.

use std::collections::BTreeSet;
use std::path::{Path, PathBuf};

use anyhow::{Context, bail};

/// One line of the map: files under `module` may name `module` itself and `allowed`.
#[derive(Debug)]
struct Rule {
    module: String,
    allowed: Vec<String>,
}

fn read_map(text: &str) -> anyhow::Result<Vec<Rule>> {
    let mut rules = Vec::new();
    for (n, line) in text.lines().enumerate() {
        let line = line.split('#').next().unwrap_or("").trim();
        if line.is_empty() {
            continue;
        }
        let Some((module, allowed)) = line.split_once("->") else {
            bail!("docs/architecture.txt line {}: expected `MODULE -> ALLOWED...`", n + 1);
        };
        let allowed = allowed.split_whitespace().map(str::to_string).collect();
        rules.push(Rule { module: module.trim().to_string(), allowed });
    }
    Ok(rules)
}

/// Whether `path` is `prefix` or lies under it, segment by segment.
fn under(path: &str, prefix: &str) -> bool {
    path == prefix || path.strip_prefix(prefix).is_some_and(|rest| rest.starts_with("::"))
}

/// The rule for a module: the longest matching prefix.
fn rule_for<'a>(rules: &'a [Rule], module: &str) -> Option<&'a Rule> {
    rules.iter().filter(|r| under(module, &r.module)).max_by_key(|r| r.module.len())
}

/// The module path of a file under `src/` (`server/relay/mod.rs` -> `server::relay`).
fn module_of(relative: &Path) -> String {
    let mut parts: Vec<String> = relative.iter().map(|p| p.to_string_lossy().into_owned()).collect();
    if let Some(last) = parts.pop() {
        let stem = last.trim_end_matches(".rs");
        if stem != "mod" {
            parts.push(stem.to_string());
        }
    }
    parts.join("::")
}

/// The code a file ships: no comments (doc comments name paths without importing them) and
/// no inline `#[cfg(test)] mod`, whose `super` is the file's own module.
fn shipped_code(source: &str) -> String {
    let code: Vec<&str> = source.lines().map(|l| l.split("//").next().unwrap_or("")).collect();
    let tests = code.windows(2).position(|w| w[0].trim() == "#[cfg(test)]" && w[1].trim_start().starts_with("mod "));
    code[..tests.unwrap_or(code.len())].join("\n")
}

/// The identifier paths (`a::b::C`) at the start of `text`; a group (`a::{b, c::D}`) gives one
/// path per member.
fn paths_at(text: &str) -> Vec<String> {
    let end = text.find(|c: char| !(c.is_alphanumeric() || c == '_' || c == ':')).unwrap_or(text.len());
    let path = text[..end].trim_end_matches(':');
    let Some(group) = text[end..].strip_prefix('{').filter(|_| text[..end].ends_with("::")) else {
        return vec![path.to_string()];
    };
    let inner = &group[..group.find('}').unwrap_or(group.len())];
    let members = inner.split(',').map(str::trim).filter(|m| !m.is_empty() && *m != "self");
    let mut out: Vec<String> =
        members.map(|m| format!("{path}::{}", m.split_whitespace().next().unwrap_or(m))).collect();
    out.push(path.to_string());
    out
}

/// The crate paths a source names: `crate::x::y`, `crate::{x, y::z}`, and `super::` paths
/// resolved against the file's module (a `mod.rs` is its folder's module).
fn named_paths(source: &str, module: &str) -> BTreeSet<String> {
    let code = shipped_code(source);
    let mut found = BTreeSet::new();
    for (i, _) in code.match_indices("crate::") {
        if i > 0 && code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_') {
            continue; // e.g. `mycrate::`
        }
        let rest = &code[i + "crate::".len()..];
        if let Some(group) = rest.strip_prefix('{') {
            let inner = &group[..group.find('}').unwrap_or(group.len())];
            found.extend(inner.split(',').flat_map(|p| paths_at(p.trim())).filter(|p| !p.is_empty()));
        } else {
            found.extend(paths_at(rest));
        }
    }
    let segments: Vec<&str> = if module.is_empty() { Vec::new() } else { module.split("::").collect() };
    for (i, _) in code.match_indices("super::") {
        if i > 0 && code[..i].ends_with(|c: char| c.is_alphanumeric() || c == '_' || c == ':') {
            continue; // `super::super::` is counted from its first `super`
        }
        let mut rest = &code[i..];
        let mut base = segments.clone();
        while let Some(r) = rest.strip_prefix("super::") {
            rest = r;
            base.pop();
        }
        for path in paths_at(rest).into_iter().filter(|p| !p.is_empty()) {
            let mut full = base.join("::");
            if !full.is_empty() {
                full.push_str("::");
            }
            full.push_str(&path);
            found.insert(full);
        }
    }
    found
}

/// The forbidden paths a file names, as `file: path` lines.
fn violations(rules: &[Rule], file: &str, module: &str, source: &str) -> anyhow::Result<Vec<String>> {
    let rule = rule_for(rules, module)
        .with_context(|| format!("{file}: module `{module}` has no rule in docs/architecture.txt"))?;
    let top_level: BTreeSet<&str> = rules.iter().map(|r| r.module.split("::").next().unwrap_or("")).collect();
    let mut bad = Vec::new();
    for path in named_paths(source, module) {
        let first = path.split("::").next().unwrap_or("");
        if !top_level.contains(first) {
            continue; // a local item, e.g. a function of the crate root
        }
        let allowed = under(&path, &rule.module) || rule.allowed.iter().any(|a| under(&path, a));
        if !allowed {
            bad.push(format!("{file}: `{}` may not use `{path}`", rule.module));
        }
    }
    Ok(bad)
}

fn rust_files(dir: &Path, out: &mut Vec<PathBuf>) -> anyhow::Result<()> {
    for entry in std::fs::read_dir(dir)? {
        let path = entry?.path();
        if path.is_dir() {
            rust_files(&path, out)?;
        } else if path.extension().is_some_and(|e| e == "rs") {
            out.push(path);
        }
    }
    Ok(())
}

fn load_rules() -> anyhow::Result<Vec<Rule>> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR"));
    read_map(&std::fs::read_to_string(root.join("docs/architecture.txt"))?)
}

#[test]
fn every_import_in_src_follows_the_architecture_map() -> anyhow::Result<()> {
    let rules = load_rules()?;
    let src = Path::new(env!("CARGO_MANIFEST_DIR")).join("src");
    let mut files = Vec::new();
    rust_files(&src, &mut files)?;
    let mut bad = Vec::new();
    for file in &files {
        let relative = file.strip_prefix(&src)?;
        if relative == Path::new("lib.rs") || relative == Path::new("main.rs") {
            continue; // the crate root declares modules; the binary only calls `app`
        }
        let module = module_of(relative);
        let source = std::fs::read_to_string(file)?;
        bad.extend(violations(&rules, &relative.display().to_string(), &module, &source)?);
    }
    assert!(bad.is_empty(), "imports across a forbidden boundary (see docs/architecture.txt):\n{}", bad.join("\n"));
    assert!(files.len() > 20, "found only {} source files: is src/ where it should be?", files.len());
    Ok(())
}

#[test]
fn a_forbidden_import_is_reported() -> anyhow::Result<()> {
    let rules = load_rules()?;
    let agent = "use crate::core::ids::MachineId;\nuse crate::server::relay::LocalRouter;\n";
    let bad = violations(&rules, "agent/x.rs", "agent::x", agent)?;
    assert_eq!(bad, vec!["agent/x.rs: `agent` may not use `server::relay::LocalRouter`".to_string()]);

    let cli = "use crate::{proto, store::Store};\n";
    assert_eq!(violations(&rules, "cli/x.rs", "cli::x", cli)?.len(), 1, "grouped imports are read");
    let api = "use crate::server::relay::{registry::LocalRouter, router::SessionRouter};\n";
    let bad = violations(&rules, "server/api/x.rs", "server::api::x", api)?;
    assert!(bad.iter().any(|b| b.contains("server::relay::registry::LocalRouter")), "nested groups are read: {bad:?}");

    let http = "use super::super::relay::registry::LocalRouter;\nuse super::super::relay::router::SessionPort;\n";
    let bad = violations(&rules, "server/http/link_socket.rs", "server::http::link_socket", http)?;
    assert_eq!(bad.len(), 1, "the HTTP side reaches the relay only through its router: {bad:?}");

    let core = "// crate::server::links in a comment is no import\nuse crate::proto;\n#[cfg(test)]\nmod tests {\n    use crate::store::Store;\n}\n";
    assert!(violations(&rules, "core/x.rs", "core::x", core)?.is_empty());
    Ok(())
}

#[test]
fn super_paths_resolve_against_the_files_module() {
    let in_file = named_paths("use super::router::RouteError;", "server::relay::registry");
    assert_eq!(in_file.into_iter().collect::<Vec<_>>(), vec!["server::relay::router::RouteError".to_string()]);
    let in_mod = named_paths("use super::links::Links;", "server::http");
    assert_eq!(in_mod.into_iter().collect::<Vec<_>>(), vec!["server::links::Links".to_string()]);
}
