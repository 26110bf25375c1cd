//! Rendering of rejections: rustc-style text (annotate-snippets) and JSON. Instructions are named in the
//! PREVAIL/clang assembly style of [`crate::isa::disasm::clang_style`].

use annotate_snippets::{Level, Renderer, Snippet};

pub use crate::isa::disasm::clang_style as disassemble;

use super::Rejection;

/// Renders a rejection in the style of rustc's diagnostics.
pub fn render(r: &Rejection, color: bool) -> String {
    let renderer = if color { Renderer::styled() } else { Renderer::plain() };
    let title = format!("{}: {}", r.property.description(), r.message);
    let origin = r.file.clone().unwrap_or_default();
    let mut footers: Vec<String> =
        vec![format!("in program `{}`, instruction {}: `{}`", r.program, r.pc, r.instruction)];
    for (name, v) in &r.values {
        footers.push(format!("{name} = {v}"));
    }
    let source = r.source_line.clone().unwrap_or_default();
    let mut msg = Level::Error.title(&title);
    if let (Some(line), false) = (r.line, source.is_empty()) {
        let col = r.column.unwrap_or(1).max(1) as usize - 1;
        // Underline from the reported column to the end of the line (the statement BTF points at).
        let start = col.min(source.len().saturating_sub(1));
        let end = source.trim_end().len().max(start + 1);
        msg = msg.snippet(
            Snippet::source(&source)
                .line_start(line as usize)
                .origin(&origin)
                .annotation(Level::Error.span(start..end).label(r.property.description())),
        );
    }
    for f in &footers {
        msg = msg.footer(Level::Note.title(f));
    }
    let out = renderer.render(msg).to_string();
    out
}

/// Renders a rejection as one JSON object.
pub fn to_json(r: &Rejection) -> String {
    serde_json::to_string(r).expect("serialisable")
}
