//! Rendering of rejections: rustc-style text (annotate-snippets) and JSON. Instructions are named in the
//! PREVAIL/clang assembly style of [`crate::isa::disasm::clang_style`].

use annotate_snippets::{Level, Renderer, Snippet};

pub use crate::isa::disasm::clang_style as disassemble;

use super::Rejection;

/// Renders a rejection in the style of rustc's diagnostics.
pub fn render(r: &Rejection, color: bool) -> String {
    let renderer = if color { Renderer::styled() } else { Renderer::plain() };
    let title = format!("{}: {}", r.property.description(), r.message);
    let origin = printable_source(r.file.as_deref().unwrap_or_default());
    let mut footers: Vec<String> =
        vec![format!("in program `{}`, instruction {}: `{}`", r.program, r.pc, r.instruction)];
    for (name, v) in &r.values {
        footers.push(format!("{name} = {v}"));
    }
    let source = printable_source(r.source_line.as_deref().unwrap_or_default());
    let mut msg = Level::Error.title(&title);
    if let (Some(line), false) = (r.line, source.trim().is_empty()) {
        msg = msg.snippet(
            Snippet::source(&source)
                .line_start(line as usize)
                .origin(&origin)
                .annotation(Level::Error.span(underline(&source, r.column)).label(r.property.description())),
        );
    }
    let footers: Vec<String> = footers.iter().map(|f| printable_source(f)).collect();
    for f in &footers {
        msg = msg.footer(Level::Note.title(f));
    }
    let out = renderer.render(msg).to_string();
    out
}

/// The BTF source line as one displayable line: control characters (tabs, stray line breaks, escapes from a
/// mutated or hostile string table) become single spaces, so byte columns of ASCII text stay where they were.
/// Text that was not UTF-8 arrives here already decoded lossily by the front end.
fn printable_source(line: &str) -> String {
    line.chars().map(|c| if c.is_control() { ' ' } else { c }).collect()
}

/// The byte range to underline: from the reported column (1-based, in bytes of the original line) to the end of
/// the line, both moved onto character boundaries: a source saved as Latin-1 reaches us with multi-byte
/// replacement characters, so a byte column can fall inside one.
fn underline(source: &str, column: Option<u32>) -> std::ops::Range<usize> {
    let floor = |mut i: usize| {
        while !source.is_char_boundary(i) {
            i -= 1;
        }
        i
    };
    let text_end = source.trim_end().len();
    let column = column.unwrap_or(1).max(1) as usize - 1;
    let start = floor(column.min(text_end.saturating_sub(1)));
    let first_char_end = source[start..].chars().next().map_or(start, |c| start + c.len_utf8());
    start..text_end.max(first_char_end)
}

/// Renders a rejection as one JSON object.
pub fn to_json(r: &Rejection) -> String {
    serde_json::to_string(r).expect("serialisable")
}

#[cfg(test)]
mod tests {
    use proptest::prelude::*;

    use super::*;
    use crate::verifier::Property;

    fn rejection(source_line: String, line: u32, column: u32) -> Rejection {
        Rejection {
            program: "prog".into(),
            pc: 3,
            instruction: "r0 = *(u64 *)(r1 +0)".into(),
            property: Property::TypeMismatch,
            message: "the message".into(),
            values: vec![("r1".into(), "scalar".into())],
            file: Some("x.c".into()),
            line: Some(line),
            column: Some(column),
            source_line: Some(source_line),
        }
    }

    #[test]
    fn a_latin1_comment_before_the_column_renders_instead_of_panicking() {
        // "/* façade é */ return *p;" saved as Latin-1: ç and é are single bytes, invalid UTF-8, decoded by the
        // front end to U+FFFD (3 bytes each), so the byte column from BTF points into a replacement character.
        let latin1: &[u8] = b"/* fa\xe7ade \xe9 */ return *p;";
        let source = String::from_utf8_lossy(latin1).into_owned();
        for column in 1..=latin1.len() as u32 + 4 {
            let text = render(&rejection(source.clone(), 12, column), false);
            assert!(text.contains("x.c:12:") && text.contains("return *p;"), "column {column}:\n{text}");
        }
    }

    #[test]
    fn control_characters_in_the_source_line_stay_on_one_line() {
        let text = render(&rejection("a\nb\r\tc\u{1b}[31m".into(), 1, 3), false);
        assert!(text.contains("a b  c [31m"), "{text}");
    }

    proptest! {
        #![proptest_config(ProptestConfig { cases: 2000, ..ProptestConfig::default() })]

        /// Whatever bytes a BTF string table holds as the source line, the diagnostic renders.
        #[test]
        fn any_bytes_as_line_info_source_render_a_diagnostic(
            bytes in proptest::collection::vec(any::<u8>(), 0..200),
            line in any::<u32>(),
            column in any::<u32>(),
            file in proptest::collection::vec(any::<u8>(), 0..20),
        ) {
            let mut r = rejection(String::from_utf8_lossy(&bytes).into_owned(), line, column);
            r.file = Some(String::from_utf8_lossy(&file).into_owned());
            let text = render(&r, false);
            prop_assert!(text.contains("the message"));
            let _ = render(&r, true);
        }
    }
}
