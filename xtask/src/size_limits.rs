//! `cargo xtask size-limits [--max-file-lines N] [--max-fn-lines N] [SRC_DIR ...]`
//!
//! Keeps the developers' guide's size rules true: no non-test source file over 800 lines and no function over
//! 120 lines in `compiler/src`, `runtime-shim/src`, `signing/src` and `emulator/src` (the defaults). CI runs it;
//! it fails and names every offender.
//!
//! Sources are parsed with `syn`, not scanned: a function's length runs from its `fn` keyword to its closing
//! brace (its doc comment and attributes do not count; closures and nested functions count towards the function
//! that contains them, and nested functions are also measured on their own). Test code does not count: a file
//! reached through the module tree only via a `#[cfg(test)]` module is a test file and is skipped, and the lines
//! of inline `#[cfg(test)]` items (a `mod tests { ... }` at the end of a file) and `#[test]` functions are not
//! counted. A `.rs` file under a source directory that no module declaration reaches is checked as non-test code.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::ExitCode;

use anyhow::{bail, Context, Result};
use syn::visit::Visit;

/// The source directories checked when none are given, relative to the repository root.
const DEFAULT_DIRS: [&str; 4] = ["compiler/src", "runtime-shim/src", "signing/src", "emulator/src"];

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Crate source directories to check (default: compiler/src runtime-shim/src signing/src emulator/src).
    pub dirs: Vec<PathBuf>,
    /// Most lines a non-test source file may have (test items excluded).
    #[arg(long, default_value_t = 800)]
    pub max_file_lines: usize,
    /// Most lines a function may have.
    #[arg(long, default_value_t = 120)]
    pub max_fn_lines: usize,
}

/// One measured function.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FunctionSize {
    /// `name` or `Type::name`.
    pub name: String,
    /// 1-based line of the `fn` keyword.
    pub line: usize,
    pub lines: usize,
}

/// One measured non-test file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct FileSize {
    pub path: PathBuf,
    /// Lines outside `#[cfg(test)]` items and `#[test]` functions.
    pub lines: usize,
    pub functions: Vec<FunctionSize>,
}

pub fn run(args: Args) -> Result<ExitCode> {
    let root = Path::new(env!("CARGO_MANIFEST_DIR")).parent().expect("xtask is inside the repository").to_path_buf();
    let dirs: Vec<PathBuf> =
        if args.dirs.is_empty() { DEFAULT_DIRS.iter().map(|d| root.join(d)).collect() } else { args.dirs.clone() };
    let mut files = Vec::new();
    let mut test_files = 0;
    for dir in &dirs {
        let (measured, skipped) = measure_source_dir(dir)?;
        files.extend(measured);
        test_files += skipped;
    }
    let shown = |p: &Path| p.strip_prefix(&root).unwrap_or(p).display().to_string();
    let mut offenders = 0;
    for file in &files {
        if file.lines > args.max_file_lines {
            offenders += 1;
            println!("file      {}: {} lines (limit {})", shown(&file.path), file.lines, args.max_file_lines);
        }
        for f in file.functions.iter().filter(|f| f.lines > args.max_fn_lines) {
            offenders += 1;
            println!(
                "function  {}:{} {}: {} lines (limit {})",
                shown(&file.path),
                f.line,
                f.name,
                f.lines,
                args.max_fn_lines
            );
        }
    }
    let function_count: usize = files.iter().map(|f| f.functions.len()).sum();
    let largest = files.iter().max_by_key(|f| f.lines);
    let longest =
        files.iter().flat_map(|file| file.functions.iter().map(move |f| (file, f))).max_by_key(|(_, f)| f.lines);
    println!(
        "size-limits: {} files ({test_files} test files skipped), {function_count} functions; largest file {}, longest function {}",
        files.len(),
        largest.map_or("-".into(), |f| format!("{} ({} lines)", shown(&f.path), f.lines)),
        longest.map_or("-".into(), |(file, f)| format!("{} in {} ({} lines)", f.name, shown(&file.path), f.lines)),
    );
    if offenders > 0 {
        eprintln!(
            "{offenders} over the limits (files ≤ {} lines, functions ≤ {} lines): split them along their seams",
            args.max_file_lines, args.max_fn_lines
        );
        return Ok(ExitCode::FAILURE);
    }
    Ok(ExitCode::SUCCESS)
}

/// Measures every non-test `.rs` file under a crate's source directory; returns them and the number of test files
/// skipped.
pub fn measure_source_dir(dir: &Path) -> Result<(Vec<FileSize>, usize)> {
    if !dir.is_dir() {
        bail!("{} is not a directory", dir.display());
    }
    // Walk the module tree from the crate roots, noting for each file whether only test modules reach it.
    let mut reached: BTreeMap<PathBuf, bool> = BTreeMap::new();
    let mut roots: Vec<PathBuf> = ["lib.rs", "main.rs"].iter().map(|r| dir.join(r)).filter(|p| p.is_file()).collect();
    if let Ok(bins) = std::fs::read_dir(dir.join("bin")) {
        roots
            .extend(bins.filter_map(|e| e.ok().map(|e| e.path())).filter(|p| p.extension().is_some_and(|x| x == "rs")));
    }
    for root in roots {
        let module_dir = root.parent().expect("a file has a directory").to_path_buf();
        walk_module_file(&root, &module_dir, false, &mut reached)?;
    }
    // Files no declaration reaches are checked as non-test code.
    for path in rust_files(dir)? {
        reached.entry(path).or_insert(false);
    }
    let mut measured = Vec::new();
    let mut skipped = 0;
    for (path, test) in reached {
        if test {
            skipped += 1;
            continue;
        }
        let text = std::fs::read_to_string(&path).with_context(|| format!("cannot read {}", path.display()))?;
        measured.push(measure_file(&path, &text)?);
    }
    Ok((measured, skipped))
}

fn rust_files(dir: &Path) -> Result<Vec<PathBuf>> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for entry in std::fs::read_dir(&d).with_context(|| format!("cannot list {}", d.display()))? {
            let path = entry?.path();
            if path.is_dir() {
                pending.push(path);
            } else if path.extension().is_some_and(|x| x == "rs") {
                out.push(path);
            }
        }
    }
    Ok(out)
}

fn parse(path: &Path, text: &str) -> Result<syn::File> {
    syn::parse_file(text).map_err(|e| {
        let at = e.span().start();
        anyhow::anyhow!("{}:{}:{}: cannot parse: {e}", path.display(), at.line, at.column + 1)
    })
}

/// Records `path` (a module file whose child modules live in `module_dir`) and follows its `mod x;` declarations.
/// A file reached through any non-test path is non-test.
fn walk_module_file(path: &Path, module_dir: &Path, test: bool, reached: &mut BTreeMap<PathBuf, bool>) -> Result<()> {
    match reached.get(path) {
        Some(false) => return Ok(()),
        Some(true) if test => return Ok(()),
        _ => {}
    }
    reached.insert(path.to_path_buf(), test);
    let text = std::fs::read_to_string(path).with_context(|| format!("cannot read {}", path.display()))?;
    let file = parse(path, &text)?;
    walk_items(&file.items, path, module_dir, test, reached)
}

fn walk_items(
    items: &[syn::Item],
    file: &Path,
    module_dir: &Path,
    test: bool,
    reached: &mut BTreeMap<PathBuf, bool>,
) -> Result<()> {
    for item in items {
        let syn::Item::Mod(m) = item else { continue };
        let test = test || is_test_only(&m.attrs);
        let name = m.ident.to_string();
        if let Some((_, inner)) = &m.content {
            walk_items(inner, file, &module_dir.join(&name), test, reached)?;
            continue;
        }
        let (child, child_dir) = if let Some(explicit) = path_attribute(&m.attrs) {
            // `#[path]` on an out-of-line module is relative to the declaring file's directory.
            let child = file.parent().expect("a file has a directory").join(explicit);
            let dir = child.parent().expect("a file has a directory").to_path_buf();
            (child, dir)
        } else if module_dir.join(format!("{name}.rs")).is_file() {
            (module_dir.join(format!("{name}.rs")), module_dir.join(&name))
        } else {
            (module_dir.join(&name).join("mod.rs"), module_dir.join(&name))
        };
        if !child.is_file() {
            bail!("{}: module `{name}` has no file {}", file.display(), child.display());
        }
        walk_module_file(&child, &child_dir, test, reached)?;
    }
    Ok(())
}

fn path_attribute(attrs: &[syn::Attribute]) -> Option<String> {
    attrs.iter().find(|a| a.path().is_ident("path")).and_then(|a| match &a.meta {
        syn::Meta::NameValue(nv) => match &nv.value {
            syn::Expr::Lit(syn::ExprLit { lit: syn::Lit::Str(s), .. }) => Some(s.value()),
            _ => None,
        },
        _ => None,
    })
}

/// Whether the item exists only in test builds: `#[test]`, or a `#[cfg(..)]` that requires `test`.
fn is_test_only(attrs: &[syn::Attribute]) -> bool {
    attrs.iter().any(|a| {
        a.path().is_ident("test")
            || (a.path().is_ident("cfg") && a.parse_args::<syn::Meta>().is_ok_and(|meta| cfg_requires_test(&meta)))
    })
}

/// Whether a `cfg` predicate can hold only when `test` does.
fn cfg_requires_test(meta: &syn::Meta) -> bool {
    match meta {
        syn::Meta::Path(p) => p.is_ident("test"),
        syn::Meta::List(list) => {
            let Ok(parts) =
                list.parse_args_with(syn::punctuated::Punctuated::<syn::Meta, syn::Token![,]>::parse_terminated)
            else {
                return false;
            };
            if list.path.is_ident("all") {
                parts.iter().any(cfg_requires_test)
            } else if list.path.is_ident("any") {
                !parts.is_empty() && parts.iter().all(cfg_requires_test)
            } else {
                false
            }
        }
        syn::Meta::NameValue(_) => false,
    }
}

/// Measures one non-test file's lines (test items excluded) and its functions.
pub fn measure_file(path: &Path, text: &str) -> Result<FileSize> {
    let file = parse(path, text)?;
    let mut sizer = Sizer { owner: None, functions: Vec::new(), test_lines: 0 };
    sizer.visit_file(&file);
    Ok(FileSize {
        path: path.to_path_buf(),
        lines: text.lines().count() - sizer.test_lines,
        functions: sizer.functions,
    })
}

struct Sizer {
    /// The type whose `impl` or trait is being visited.
    owner: Option<String>,
    functions: Vec<FunctionSize>,
    /// Lines of top-level test-only items seen so far.
    test_lines: usize,
}

/// Lines from the first attribute (or `start`) to `end`, inclusive.
fn item_lines(attrs: &[syn::Attribute], start: proc_macro2::Span, end: proc_macro2::Span) -> usize {
    let first = attrs.first().map_or(start.start().line, |a| a.pound_token.span.start().line);
    end.end().line + 1 - first
}

impl Sizer {
    fn function(&mut self, name: &syn::Ident, sig: &syn::Signature, block: &syn::Block) {
        let line = sig.fn_token.span.start().line;
        let lines = block.brace_token.span.close().end().line + 1 - line;
        let name = match &self.owner {
            Some(owner) => format!("{owner}::{name}"),
            None => name.to_string(),
        };
        self.functions.push(FunctionSize { name, line, lines });
    }
}

impl<'ast> Visit<'ast> for Sizer {
    fn visit_item_mod(&mut self, m: &'ast syn::ItemMod) {
        if is_test_only(&m.attrs) {
            if let Some((brace, _)) = &m.content {
                self.test_lines += item_lines(&m.attrs, m.mod_token.span, brace.span.close());
            }
            return;
        }
        syn::visit::visit_item_mod(self, m);
    }

    fn visit_item_fn(&mut self, f: &'ast syn::ItemFn) {
        if is_test_only(&f.attrs) {
            self.test_lines += item_lines(&f.attrs, f.sig.fn_token.span, f.block.brace_token.span.close());
            return;
        }
        // A nested `fn` belongs to no impl.
        let owner = self.owner.take();
        self.function(&f.sig.ident, &f.sig, &f.block);
        syn::visit::visit_item_fn(self, f);
        self.owner = owner;
    }

    fn visit_item_impl(&mut self, i: &'ast syn::ItemImpl) {
        if is_test_only(&i.attrs) {
            self.test_lines += item_lines(&i.attrs, i.impl_token.span, i.brace_token.span.close());
            return;
        }
        let owner = match &*i.self_ty {
            syn::Type::Path(p) => p.path.segments.last().map(|s| s.ident.to_string()),
            _ => None,
        };
        let saved = std::mem::replace(&mut self.owner, owner);
        syn::visit::visit_item_impl(self, i);
        self.owner = saved;
    }

    fn visit_item_trait(&mut self, t: &'ast syn::ItemTrait) {
        let saved = self.owner.replace(t.ident.to_string());
        syn::visit::visit_item_trait(self, t);
        self.owner = saved;
    }

    fn visit_impl_item_fn(&mut self, f: &'ast syn::ImplItemFn) {
        if is_test_only(&f.attrs) {
            self.test_lines += item_lines(&f.attrs, f.sig.fn_token.span, f.block.brace_token.span.close());
            return;
        }
        self.function(&f.sig.ident, &f.sig, &f.block);
        let owner = self.owner.take();
        syn::visit::visit_impl_item_fn(self, f);
        self.owner = owner;
    }

    fn visit_trait_item_fn(&mut self, f: &'ast syn::TraitItemFn) {
        if let Some(block) = &f.default {
            self.function(&f.sig.ident, &f.sig, block);
        }
        let owner = self.owner.take();
        syn::visit::visit_trait_item_fn(self, f);
        self.owner = owner;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn measure(text: &str) -> FileSize {
        measure_file(Path::new("x.rs"), text).unwrap()
    }

    #[test]
    fn a_function_runs_from_its_fn_keyword_to_its_closing_brace() {
        let text = "/// doc\n#[inline]\npub fn f() {\n    let x = \"}\";\n    {\n    }\n}\n";
        let size = measure(text);
        assert_eq!(size.functions, vec![FunctionSize { name: "f".into(), line: 3, lines: 5 }]);
        assert_eq!(size.lines, 7);
    }

    #[test]
    fn methods_are_named_by_their_type_and_nested_functions_are_measured_too() {
        let text = "struct S;\nimpl S {\n    fn m(&self) {\n        fn inner() {}\n    }\n}\ntrait T {\n    fn d() {\n    }\n    fn r();\n}\n";
        let size = measure(text);
        let names: Vec<(&str, usize)> = size.functions.iter().map(|f| (f.name.as_str(), f.lines)).collect();
        assert_eq!(names, vec![("S::m", 3), ("inner", 1), ("T::d", 2)]);
    }

    #[test]
    fn inline_test_modules_and_test_functions_do_not_count() {
        let text = "fn a() {}\n\n#[cfg(test)]\nmod tests {\n    #[test]\n    fn t() {\n    }\n}\n#[test]\nfn u() {}\n";
        let size = measure(text);
        assert_eq!(size.functions.len(), 1);
        assert_eq!(size.lines, 2, "10 lines, of which 6 are the test module and 2 the #[test] function");
    }

    #[test]
    fn cfg_predicates_that_need_test() {
        let requires = |s: &str| cfg_requires_test(&syn::parse_str::<syn::Meta>(s).unwrap());
        assert!(requires("test"));
        assert!(requires("all(test, unix)"));
        assert!(requires("any(test, all(test, unix))"));
        assert!(!requires("any(test, unix)"));
        assert!(!requires("not(test)"));
        assert!(!requires("feature = \"test\""));
    }

    #[test]
    fn files_reached_only_through_cfg_test_modules_are_skipped() {
        let dir = tempfile::tempdir().unwrap();
        let src = dir.path();
        std::fs::write(src.join("lib.rs"), "pub mod a;\n#[cfg(test)]\nmod tests;\nmod inline { pub mod b; }\n")
            .unwrap();
        std::fs::write(src.join("a.rs"), "#[cfg(test)]\nmod a_tests;\npub fn f() {}\n").unwrap();
        std::fs::create_dir_all(src.join("a")).unwrap();
        std::fs::write(src.join("a").join("a_tests.rs"), "fn long() {\n\n\n}\n").unwrap();
        std::fs::create_dir_all(src.join("tests")).unwrap();
        std::fs::write(src.join("tests").join("mod.rs"), "mod more;\n").unwrap();
        std::fs::write(src.join("tests").join("more.rs"), "fn t() {}\n").unwrap();
        std::fs::create_dir_all(src.join("inline")).unwrap();
        std::fs::write(src.join("inline").join("b.rs"), "fn g() {}\n").unwrap();
        std::fs::write(src.join("orphan.rs"), "fn o() {}\n").unwrap();
        let (files, skipped) = measure_source_dir(src).unwrap();
        let mut names: Vec<String> =
            files.iter().map(|f| f.path.strip_prefix(src).unwrap().display().to_string()).collect();
        names.sort();
        assert_eq!(names, ["a.rs", "inline/b.rs", "lib.rs", "orphan.rs"]);
        assert_eq!(skipped, 3, "a/a_tests.rs, tests/mod.rs, tests/more.rs");
    }

    #[test]
    fn a_declared_module_without_a_file_is_an_error() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("lib.rs"), "mod missing;\n").unwrap();
        let err = measure_source_dir(dir.path()).unwrap_err().to_string();
        assert!(err.contains("module `missing` has no file"), "{err}");
    }
}
