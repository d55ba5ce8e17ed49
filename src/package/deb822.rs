//! Paragraphs of Debian's control-file format (deb822): dpkg's status file
//! (`/var/lib/dpkg/status`) and `apt-cache show` output, read field by field.
//!
//! The rules are Debian Policy §5.1: paragraphs are separated by blank lines; a field is
//! `Name: value` at the start of a line; a line that starts with a space or tab continues the
//! field before it; field names are case-insensitive. One reader serves every caller, so a
//! continuation line that happens to contain `Package:` is never read as a field.
//!
//! A package's own control file is read strictly by `deb::parse_control`, which rejects
//! malformed lines: this reader is for files dpkg and apt wrote, and skips what it cannot read.

/// One paragraph of a deb822 file (one package's record).
#[derive(Debug, Clone, Copy)]
pub struct Paragraph<'a>(&'a str);

/// The non-empty paragraphs of `text`, in order. Blank lines are empty or whitespace-only.
pub fn paragraphs(text: &str) -> impl Iterator<Item = Paragraph<'_>> {
    let mut rest = text;
    std::iter::from_fn(move || loop {
        if rest.is_empty() {
            return None;
        }
        // The paragraph runs to the first blank line (or the end).
        let mut end = rest.len();
        let mut next = rest.len();
        let mut at = 0;
        for line in rest.split_inclusive('\n') {
            if line.trim().is_empty() {
                end = at;
                next = at + line.len();
                break;
            }
            at += line.len();
        }
        let para = &rest[..end];
        rest = &rest[next..];
        if !para.trim().is_empty() {
            return Some(Paragraph(para));
        }
    })
}

impl<'a> Paragraph<'a> {
    /// The value of field `name` (case-insensitive), trimmed, without its continuation lines:
    /// the fields callers read (`Package`, `Version`, `Status`, `Depends`, `Provides`,
    /// `SHA256`, ...) are one line in what dpkg and apt write.
    pub fn field(&self, name: &str) -> Option<&'a str> {
        self.0.lines().find_map(|line| {
            if line.starts_with([' ', '\t']) {
                return None;
            }
            let (key, value) = line.split_once(':')?;
            key.eq_ignore_ascii_case(name).then(|| value.trim())
        })
    }

    /// The third word of `Status:` (dpkg's package state: `installed`, `config-files`,
    /// `half-configured`, ...), or `None` when the paragraph has no well-formed `Status`.
    pub fn dpkg_state(&self) -> Option<&'a str> {
        self.field("Status")?.split_whitespace().nth(2)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn paragraphs_split_on_blank_and_whitespace_only_lines() {
        let text = "Package: a\nVersion: 1\n\n\n \nPackage: b\r\nVersion: 2\r\n\r\nPackage: c\n";
        let names: Vec<_> = paragraphs(text)
            .filter_map(|p| p.field("Package"))
            .collect();
        assert_eq!(names, ["a", "b", "c"]);
        assert_eq!(paragraphs("\n\n  \n").count(), 0);
    }

    #[test]
    fn a_continuation_line_is_never_a_field() {
        let text = "Package: real\nDescription: short\n Package: not-this-one\n Version: 9\n";
        let p = paragraphs(text).next().unwrap();
        assert_eq!(p.field("Package"), Some("real"));
        assert_eq!(p.field("Version"), None);
        assert_eq!(p.field("description"), Some("short"));
    }

    #[test]
    fn dpkg_state_is_the_third_word_of_status() {
        let p = paragraphs("Package: x\nStatus: install ok half-configured\n")
            .next()
            .unwrap();
        assert_eq!(p.dpkg_state(), Some("half-configured"));
        let bad = paragraphs("Package: x\nStatus: install\n").next().unwrap();
        assert_eq!(bad.dpkg_state(), None);
    }
}
