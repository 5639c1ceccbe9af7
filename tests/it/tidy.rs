//! The invariants of ARCHITECTURE.md that can be read off the source tree, checked: each check
//! fails naming the file and line that breaks one.
//!
//! The checks read lines, not syntax trees: they look for the few ways the code could break an
//! invariant (a `Command::new`, a `std::env::var`, a `major >= 15`), and skip comment lines, which
//! may well talk about what the code does not do.

use std::path::{Path, PathBuf};

/// This file: it names what it looks for.
const TIDY: &str = "tests/it/tidy.rs";

/// Violations in files that another change is rewriting; each entry names the check, the file
/// and a fragment of the offending line. An entry that no longer matches anything fails the check
/// that owns it: remove it then.
const PENDING: &[(&str, &str, &str)] = &[];

/// What the library and the CLI may not do outside `src/postgres/server.rs`: start or signal a process.
const SPAWN_OR_SIGNAL: &[&str] = &[
    "process::Command",
    "Command::new",
    "::fork(",
    "kernel_fork",
    "libc::fork",
    "libc::vfork",
    "libc::exec",
    "libc::posix_spawn",
    "libc::kill",
    "libc::tgkill",
    "libc::sigqueue",
    "pidfd_send_signal",
    "rustix::process::kill",
    "kill_process",
    ".kill()",
];

#[test]
fn only_server_rs_spawns_or_signals_processes() {
    let mut found = Vec::new();
    for file in rust_files(&["src", "pgclone-cli/src"]) {
        if file == Path::new("src/postgres/server.rs") {
            continue;
        }
        for (number, line) in code_lines(&file) {
            if let Some(what) = SPAWN_OR_SIGNAL.iter().find(|p| line.contains(*p)) {
                found.push(at(
                    &file,
                    number,
                    &format!("`{what}` outside src/postgres/server.rs"),
                    &line,
                ));
            }
        }
    }
    report("spawn", found);
}

/// What only Linux has (docs/platforms.md), which the library may use in `src/sys/` only: /proc,
/// per-thread credentials, prctl, the FICLONE and FIEMAP ioctls, `copy_file_range`, `syncfs`,
/// the passwd lookups (the last four lines: the same calls through rustix).
const LINUX_ONLY: &[&str] = &[
    "libc::syscall",
    "libc::prctl",
    "/proc/",
    "FICLONE",
    "FIEMAP",
    "syncfs",
    "getpwnam",
    "getpwuid",
    "setfsuid",
    "ioctl_ficlone",
    "libc::ioctl",
    "set_parent_process_death_signal",
    "fs::copy_file_range",
];

#[test]
fn linux_specifics_live_in_sys() {
    let mut found = Vec::new();
    for file in rust_files(&["src"]) {
        if file.starts_with("src/sys") {
            continue;
        }
        for (number, line) in code_lines(&file) {
            if let Some(what) = linux_only(&line) {
                found.push(at(
                    &file,
                    number,
                    &format!("`{what}` outside src/sys/ (see docs/platforms.md)"),
                    &line,
                ));
            }
        }
    }
    report("platform", found);
}

#[test]
fn environment_is_read_in_config_rs_only() {
    let mut found = Vec::new();
    for file in rust_files(&["src", "pgclone-cli/src"]) {
        if file == Path::new("src/config.rs") {
            continue;
        }
        for (number, line) in code_lines(&file) {
            if reads_environment(&line) {
                found.push(at(&file, number, "`std::env` outside src/config.rs", &line));
            }
        }
    }
    report("env", found);
}

/// The entry points that read the configuration (`Config::from_env`), once per call; whatever
/// they call takes it (or what was resolved from it) as a parameter. (file, function: `Type::fn`
/// inside an `impl`.)
const CONFIG_READERS: &[(&str, &str)] = &[
    // `run_async` and `run_sync`: once per test, handed to the builder and the teardown.
    ("src/harness/mod.rs", "run"),
    // Unless the harness handed it one.
    ("src/harness/test_db.rs", "TestDbBuilder::start"),
    ("src/postgres/temp_cluster.rs", "TempClusterBuilder::start"),
    ("src/postgres/server.rs", "Server::start"),
    ("src/postgres/binaries.rs", "PgBinaries::find"),
    ("src/postgres/binaries.rs", "PgBinaries::find_major"),
    ("src/store/gc.rs", "collect_garbage"),
    ("src/store/gc.rs", "pgclone_dir"),
    ("src/store/gc.rs", "UnfinishedClone::begin"),
    ("src/store/gc.rs", "unfinished_clones"),
    ("src/clone/mod.rs", "clone_cluster"),
    ("src/clone/offline.rs", "clone_stopped_cluster"),
    ("src/clone/online.rs", "clone_running_cluster"),
    ("src/clone/preview.rs", "preview_clone"),
    ("src/lib.rs", "run_as_user"),
];

/// Public entry points that read the configuration themselves: the library calling one reads
/// it again, so it calls what they call instead.
const CONFIG_READING_CALLS: &[&str] = &[
    "run_as_user(",
    "clone_cluster(",
    "clone_stopped_cluster(",
    "clone_running_cluster(",
    "preview_clone(",
    "collect_garbage(",
    "pgclone_dir(",
    "UnfinishedClone::begin(",
    "unfinished_clones(",
    "PgBinaries::find(",
    "PgBinaries::find_major(",
    "Server::start(",
    "TempCluster::start(",
    "TestDb::start(",
];

#[test]
fn configuration_is_read_once_per_entry_point() {
    let mut found = Vec::new();
    for file in rust_files(&["src"]) {
        if file == Path::new("src/config.rs") {
            continue;
        }
        let text = std::fs::read_to_string(repository().join(&file)).unwrap();
        for (number, line, what) in config_reads(&file, &text) {
            found.push(at(&file, number, &what, &line));
        }
    }
    report("config", found);
}

/// The lines of a library file (its tests aside) that read the configuration outside the
/// entry points of `CONFIG_READERS`, or call one of those entry points: (line number, line,
/// what is wrong).
fn config_reads(file: &Path, text: &str) -> Vec<(usize, String, String)> {
    let mut found = Vec::new();
    // The impl blocks and functions the line is in: (indentation, `impl` or `fn`, name).
    let mut scopes: Vec<(usize, &str, String)> = Vec::new();
    for (index, line) in text.lines().enumerate() {
        let code = line.trim_start();
        if code.starts_with("#[cfg(test)]") {
            break; // test code is an entry point of its own
        }
        if code.is_empty() || code.starts_with("//") {
            continue;
        }
        let indent = line.len() - code.len();
        // A scope ends at the first line as little indented as its opening one, but for the
        // rest of a signature (`) -> T {`, `where`) and its closing brace.
        let continues =
            |c: &str| c.starts_with(')') || c.starts_with("where") || c.starts_with('}');
        while scopes
            .last()
            .is_some_and(|(open, ..)| indent < *open || (indent == *open && !continues(code)))
        {
            scopes.pop();
        }
        if let Some(name) = declared(code, "fn") {
            scopes.push((indent, "fn", name));
        } else if let Some(name) = declared(code, "impl") {
            scopes.push((indent, "impl", name));
            continue;
        }
        let function = scopes.iter().rposition(|(_, kind, _)| *kind == "fn");
        let qualified = function.map(|at| {
            let name = &scopes[at].2;
            match scopes[..at]
                .iter()
                .rev()
                .find(|(_, kind, _)| *kind == "impl")
            {
                Some((.., ty)) => format!("{ty}::{name}"),
                None => name.clone(),
            }
        });
        let qualified = qualified.unwrap_or_default();
        let allowed = CONFIG_READERS
            .iter()
            .any(|(f, entry)| file == Path::new(f) && qualified == *entry);
        if code.contains("Config::from_env(") && !allowed {
            let what = format!(
                "`Config::from_env` in `{qualified}`, which is not an entry point of \
                 CONFIG_READERS in tests/it/tidy.rs: take the caller's `Config` as a parameter"
            );
            found.push((index + 1, line.to_string(), what));
        }
        let declaration = declared(code, "fn");
        for call in CONFIG_READING_CALLS {
            let name = call.trim_end_matches('(');
            let own = declaration.as_deref() == name.rsplit("::").next();
            if has_path_segment(code, call) && !own {
                let what = format!(
                    "calls `{name}`, an entry point that reads the configuration again: call \
                     what it calls, with the `Config` (or what was resolved from it) at hand"
                );
                found.push((index + 1, line.to_string(), what));
            }
        }
    }
    found
}

/// The name a line declares with `keyword` (`fn`, `impl`): a function's name, or the type an
/// impl block is for (`impl<T> Trait for Type<T> {` gives `Type`).
fn declared(code: &str, keyword: &str) -> Option<String> {
    let is_ident = |c: char| c.is_ascii_alphanumeric() || c == '_';
    let at = code
        .match_indices(&format!("{keyword} "))
        .chain(code.match_indices(&format!("{keyword}<")))
        .map(|(at, _)| at)
        .find(|&at| match keyword {
            // An impl block starts its line; `impl Trait` in a signature is no block.
            "impl" => at == 0 || code[..at].trim_end() == "unsafe",
            _ => at == 0 || code[..at].ends_with(' '),
        })?;
    let mut rest = &code[at + keyword.len()..];
    if keyword == "impl" {
        if rest.starts_with('<') {
            rest = &rest[rest.find('>')? + 1..]; // impl<T>: its generics
        }
        if let Some(target) = rest.split(" for ").nth(1) {
            rest = target;
        }
    }
    let rest = rest.trim_start();
    let name: String = rest.chars().take_while(|c| is_ident(*c)).collect();
    (!name.is_empty()).then_some(name)
}

#[test]
fn the_macro_crate_does_no_io() {
    let mut found = Vec::new();
    for file in rust_files(&["pgclone-macros/src"]) {
        for (number, line) in code_lines(&file) {
            if let Some(what) = io_in_macros(&line) {
                found.push(at(
                    &file,
                    number,
                    &format!("`{what}` in the macro crate"),
                    &line,
                ));
            }
        }
    }
    report("macros", found);
}

#[test]
fn only_postgres_features_compares_major_versions() {
    let mut found = Vec::new();
    for file in rust_files(&[
        "src",
        "pgclone-cli/src",
        "pgclone-macros/src",
        "tests",
        "examples",
        "benches",
    ]) {
        if file == Path::new("src/postgres/features.rs") || file == Path::new(TIDY) {
            continue;
        }
        for (number, line) in code_lines(&file) {
            if compares_major(&line) {
                found.push(at(
                    &file,
                    number,
                    "a major version compared outside src/postgres/features.rs (ask it instead)",
                    &line,
                ));
            }
        }
    }
    report("major", found);
}

#[test]
fn docs_cite_only_files_in_the_repository() {
    let root = repository();
    let mut found = Vec::new();
    for file in files(&["."], &["rs", "md"]) {
        if file == Path::new(TIDY) {
            continue;
        }
        let dir = file.parent().unwrap_or(Path::new(""));
        let markdown = file.extension().is_some_and(|e| e == "md");
        let text = std::fs::read_to_string(root.join(&file)).unwrap();
        for (number, line) in text.lines().enumerate() {
            // What lies beside the repository on one machine is not part of it.
            if line.contains("../shared") || line.contains("/work/shared") {
                found.push(at(
                    &file,
                    number + 1,
                    "cites a directory outside the repository",
                    line,
                ));
            }
            for cited in cited_files(line, markdown) {
                // From the repository's top (ARCHITECTURE.md) or from the citing file's directory.
                let exists = |base: &Path| root.join(base).join(&cited).exists();
                if !exists(Path::new("")) && !exists(dir) {
                    let what = format!("cites `{cited}`, which is not in the repository");
                    found.push(at(&file, number + 1, &what, line));
                }
            }
        }
    }
    report("docs", found);
}

/// The detectors above, on lines that break (and keep) each invariant: a check that finds
/// nothing proves something only if it would find a violation.
#[test]
fn the_detectors_find_what_they_look_for() {
    let spawns = |line: &str| SPAWN_OR_SIGNAL.iter().any(|p| line.contains(p));
    assert!(spawns(
        "let out = std::process::Command::new(\"pg_config\").output();"
    ));
    assert!(spawns("unsafe { libc::kill(pid, libc::SIGTERM) };"));
    assert!(spawns(
        "let _ = rustix::process::kill_process(pid, Signal::TERM);"
    ));
    assert!(spawns("child.kill().unwrap();"));
    assert!(!spawns("pub async fn fork(&self) -> Result<TestDb> {"));
    assert!(!spawns("let pid = std::process::id();"));

    assert!(
        linux_only("let stat = std::fs::read_to_string(format!(\"/proc/{pid}/stat\"));").is_some()
    );
    assert!(linux_only("libc::syscall(libc::SYS_setfsuid, uid as libc::c_long);").is_some());
    assert!(linux_only("rustix::fs::syncfs(&dir).map_err(std::io::Error::from)?;").is_some());
    assert!(
        linux_only("CopyMethod::Reflink => Ok(rustix::fs::ioctl_ficlone(to, from)?),").is_some()
    );
    assert!(linux_only("let entry = libc::getpwuid(uid);").is_some());
    assert!(linux_only(
        "let n = crate::sys::copy_range(from, &mut off_in, to, &mut off_out, chunk)?;"
    )
    .is_none());
    assert!(linux_only("CopyMethod::CopyFileRange => \"copy_file_range\",").is_none());
    assert!(linux_only("let dir = Path::new(\"/var/cache/pgclone\");").is_none());

    let reads = |file: &str, text: &str| -> Vec<usize> {
        config_reads(Path::new(file), text)
            .into_iter()
            .map(|(number, ..)| number)
            .collect()
    };
    let gc = "pub fn collect_garbage(root: Option<&Path>) -> Result<GcReport> {\n    \
              let config = Config::from_env()?;\n    sweep(&config)\n}\n\n\
              fn sweep(config: &Config) -> Result<GcReport> {\n    \
              let again = Config::from_env()?;\n    let user = crate::server::run_as_user()?;\n}\n";
    assert_eq!(reads("src/store/gc.rs", gc), [7, 8]);
    assert_eq!(reads("src/store/root.rs", gc), [2, 7, 8]);
    let builder = "impl TestDbBuilder<'_> {\n    pub async fn start(\n        self,\n    \
                   ) -> Result<TestDb> {\n        let config = match self.config {\n            \
                   None => Config::from_env()?,\n        };\n    }\n}\n\
                   impl TestDb {\n    pub async fn start(golden: &Golden) -> Result<TestDb> {\n        \
                   Config::from_env()?;\n    }\n}\n#[cfg(test)]\nfn t() { Config::from_env(); }\n";
    assert_eq!(reads("src/harness/test_db.rs", builder), [12]);
    assert_eq!(
        declared("impl<T: Debug> TestOutcome for Result<(), T> {", "impl").as_deref(),
        Some("Result")
    );
    assert_eq!(
        declared("pub(crate) async fn ensure_built(", "fn").as_deref(),
        Some("ensure_built")
    );
    assert_eq!(declared("let f: fn() -> Golden = app;", "fn"), None);
    assert_eq!(
        declared(
            "pub fn start(dir: impl AsRef<Path>) -> Result<Server> {",
            "impl"
        ),
        None
    );
    assert!(reads(
        "src/harness/template.rs",
        "fn go() {\n    TemplateServer::start(golden)\n}\n"
    )
    .is_empty());

    assert!(reads_environment("let dir = std::env::temp_dir();"));
    assert!(reads_environment("use std::env;"));
    assert!(reads_environment("let v = env::var(\"PGCLONE_DIR\");"));
    assert!(!reads_environment(
        "let dir = PathBuf::from(env!(\"CARGO_MANIFEST_DIR\"));"
    ));
    assert!(!reads_environment(
        "let root = Root::open(None, &config, env.run_as.as_ref())?;"
    ));

    assert!(io_in_macros("let text = std::fs::read_to_string(path);").is_some());
    assert!(io_in_macros("use std::{env, fmt};").is_some());
    assert!(io_in_macros("let f = File::open(p);").is_some());
    assert!(io_in_macros("let tokens = quote! { #body };").is_none());
    assert!(io_in_macros("let profile = input.ident.to_string(); // Profile").is_none());

    assert!(compares_major("if major >= 15 {"));
    assert!(compares_major("if bins.version().major() < 14 {"));
    assert!(compares_major("if 18 <= self.major {"));
    assert!(compares_major("if version.major < MIN_MAJOR {"));
    assert!(!compares_major("if major != bins.version().major() {"));
    assert!(!compares_major("pub fn major(&self) -> u32 {"));
    assert!(!compares_major("fn major() -> u32 {"));
    assert!(!compares_major(
        "Some(major) => format!(\"PostgreSQL {major}\"),"
    ));
    assert!(!compares_major("rustix::fs::major(dev),"));

    assert_eq!(
        cited_files("//! (see POSTGRES.md 7)", false),
        ["POSTGRES.md"]
    );
    assert_eq!(cited_files("[facts](POSTGRES.md#x)", true), ["POSTGRES.md"]);
    assert_eq!(
        cited_files("see [the plot](docs/compare.png)", true),
        ["docs/compare.png"]
    );
    assert!(cited_files("https://example.invalid/README.md", true).is_empty());
}

/// The Linux-only call a line of code makes, if any.
fn linux_only(line: &str) -> Option<&'static str> {
    LINUX_ONLY.iter().find(|p| line.contains(*p)).copied()
}

/// Whether a line of code reads the environment (`std::env`, or `env::` imported from it).
fn reads_environment(line: &str) -> bool {
    line.contains("std::env") || has_path_segment(line, "env::")
}

/// The I/O a line of the macro crate does, if any.
fn io_in_macros(line: &str) -> Option<&'static str> {
    const MODULES: &[&str] = &["fs", "process", "net", "env", "io"];
    for module in MODULES {
        let imported = line.contains("use std::{") && words(line).any(|w| w == *module);
        if imported || has_path_segment(line, &format!("{module}::")) {
            return Some(module);
        }
    }
    words(line).any(|w| w == "File").then_some("File")
}

/// Whether a line orders a major version (`major >= 15`, `18 <= self.major`, `v.major() < MIN`):
/// an identifier containing "major" beside `<`, `<=`, `>` or `>=`.
fn compares_major(line: &str) -> bool {
    let bytes = line.as_bytes();
    let is_ident = |b: u8| b.is_ascii_alphanumeric() || b == b'_';
    let mut start = 0;
    while start < bytes.len() {
        if !is_ident(bytes[start]) {
            start += 1;
            continue;
        }
        let mut end = start;
        while end < bytes.len() && is_ident(bytes[end]) {
            end += 1;
        }
        if line[start..end].to_ascii_lowercase().contains("major") {
            // To the right: an optional `()`, then the operator.
            let right = line[end..]
                .strip_prefix("()")
                .unwrap_or(&line[end..])
                .trim_start();
            let right_compares = (right.starts_with('<') && !right.starts_with("<<"))
                || (right.starts_with('>') && !right.starts_with(">>"));
            // To the left: past the path it ends (`self.`, `bins.version().`), the operator.
            let path_start = line[..start]
                .trim_end_matches(|c: char| c.is_ascii_alphanumeric() || "_.()".contains(c))
                .trim_end();
            let left_compares = path_start.ends_with(">=")
                || path_start.ends_with("<=")
                || (path_start.ends_with('<') && !path_start.ends_with("<<"))
                || (path_start.ends_with('>')
                    && !path_start.ends_with("->")
                    && !path_start.ends_with("=>")
                    && !path_start.ends_with(">>"));
            if right_compares || left_compares {
                return true;
            }
        }
        start = end;
    }
    false
}

/// The files a line cites: names ending in `.md` (`docs/postgres-facts.md`, `../README.md`),
/// and in Markdown the targets of links (`[plot](docs/compare.png)`); web addresses aside.
fn cited_files(line: &str, markdown: bool) -> Vec<String> {
    let mut cited = Vec::new();
    let is_path_char = |c: char| c.is_ascii_alphanumeric() || "_./-".contains(c);
    let mut rest = line;
    while let Some(at) = rest.find(".md") {
        let before = &rest[..at];
        let start = before
            .rfind(|c: char| !is_path_char(c))
            .map_or(0, |i| i + 1);
        let after = &rest[at + 3..];
        let whole_word = !after.starts_with(|c: char| c.is_ascii_alphanumeric() || c == '_');
        let name = rest[start..at + 3].trim_start_matches("./");
        let in_address = before[..start].ends_with(':') || name.starts_with("//");
        let named = before.ends_with(|c: char| c.is_ascii_alphanumeric() || "_-".contains(c));
        if whole_word && named && !in_address {
            cited.push(name.to_string());
        }
        rest = after;
    }
    if markdown {
        let mut rest = line;
        while let Some(at) = rest.find("](") {
            let target = &rest[at + 2..];
            let end = target.find([')', ' ', '#']).unwrap_or(target.len());
            let target = &target[..end];
            let address = target.contains("://") || target.starts_with("mailto:");
            if !target.is_empty() && !address && !cited.iter().any(|c| c == target) {
                cited.push(target.to_string());
            }
            rest = &rest[at + 2..];
        }
    }
    cited
}

/// Whether `segment` (such as `env::`) starts a path in `line` or follows `::`, and is not the
/// tail of a longer name (`tokio_env::`).
fn has_path_segment(line: &str, segment: &str) -> bool {
    line.match_indices(segment).any(|(at, _)| {
        !line[..at]
            .chars()
            .next_back()
            .is_some_and(|c| c.is_ascii_alphanumeric() || c == '_')
    })
}

fn words(line: &str) -> impl Iterator<Item = &str> {
    line.split(|c: char| !(c.is_ascii_alphanumeric() || c == '_'))
}

/// One violation, as the failure shows it.
fn at(file: &Path, number: usize, what: &str, line: &str) -> (PathBuf, String, String) {
    (
        file.to_path_buf(),
        line.trim().to_string(),
        format!("{}:{number}: {what}\n    {}", file.display(), line.trim()),
    )
}

/// Fails with every violation `check` found that `PENDING` does not excuse, and every entry of
/// `PENDING` for `check` that excused nothing.
fn report(check: &str, found: Vec<(PathBuf, String, String)>) {
    let pending: Vec<_> = PENDING.iter().filter(|(c, ..)| *c == check).collect();
    let excused = |file: &Path, line: &str| {
        pending
            .iter()
            .any(|(_, f, fragment)| file == Path::new(f) && line.contains(fragment))
    };
    let mut failures: Vec<String> = found
        .iter()
        .filter(|(file, line, _)| !excused(file, line))
        .map(|(.., message)| message.clone())
        .collect();
    for (_, file, fragment) in &pending {
        if !found
            .iter()
            .any(|(f, line, _)| f == Path::new(file) && line.contains(fragment))
        {
            failures.push(format!(
                "{file}: no longer has `{fragment}`: remove its entry from PENDING in tests/it/tidy.rs"
            ));
        }
    }
    assert!(
        failures.is_empty(),
        "an invariant of ARCHITECTURE.md is broken:\n{}",
        failures.join("\n")
    );
}

/// The tree checked: this repository, or `PGCLONE_TIDY_ROOT` (a copy with a violation planted,
/// to see a check fail).
fn repository() -> PathBuf {
    std::env::var_os("PGCLONE_TIDY_ROOT")
        .map(PathBuf::from)
        .unwrap_or_else(|| PathBuf::from(env!("CARGO_MANIFEST_DIR")))
}

fn rust_files(dirs: &[&str]) -> Vec<PathBuf> {
    files(dirs, &["rs"])
}

/// The files under `dirs` (relative to the repository) with one of the `extensions`, as paths
/// relative to the repository; build output and version control left out.
fn files(dirs: &[&str], extensions: &[&str]) -> Vec<PathBuf> {
    let root = repository();
    let mut found = Vec::new();
    let mut queue: Vec<PathBuf> = dirs.iter().map(PathBuf::from).collect();
    while let Some(dir) = queue.pop() {
        let Ok(entries) = std::fs::read_dir(root.join(&dir)) else {
            continue;
        };
        for entry in entries.flatten() {
            let name = entry.file_name();
            let path = dir.join(&name);
            let path = path.strip_prefix(".").unwrap_or(&path).to_path_buf();
            let Ok(kind) = entry.file_type() else {
                continue;
            };
            if kind.is_dir() {
                if !matches!(name.to_str(), Some("target" | ".git" | "node_modules")) {
                    queue.push(path);
                }
            } else if path
                .extension()
                .is_some_and(|e| extensions.iter().any(|x| e == *x))
            {
                found.push(path);
            }
        }
    }
    found.sort();
    found
}

/// The lines of `file` that are code (comment lines left out), numbered from 1.
fn code_lines(file: &Path) -> Vec<(usize, String)> {
    let text = std::fs::read_to_string(repository().join(file)).unwrap();
    text.lines()
        .enumerate()
        .filter(|(_, line)| !line.trim_start().starts_with("//"))
        .map(|(i, line)| (i + 1, line.to_string()))
        .collect()
}
