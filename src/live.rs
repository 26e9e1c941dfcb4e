//! A frame of lines redrawn in place on a terminal (`monitor`, `trace
//! --live`): the escape sequences come from crossterm, written into the
//! string the command hands to its output sink, so commands still never
//! touch the terminal themselves. Each redraw goes back to the frame's
//! first line, rewrites every line and clears what is left of it, then
//! clears below (a frame that shrank), inside a synchronized update so
//! terminals that know it show no tearing and others ignore it.

use std::fmt::Write as _;

use crossterm::Command;
use crossterm::cursor::{Hide, MoveToColumn, MoveToPreviousLine, Show};
use crossterm::terminal::{BeginSynchronizedUpdate, Clear, ClearType, EndSynchronizedUpdate};

/// A frame on screen: how many lines the last redraw left there.
#[derive(Debug, Default)]
pub struct Frame {
    drawn: usize,
}

fn ansi(c: impl Command, out: &mut String) {
    // Writing into a String cannot fail.
    let _ = c.write_ansi(out);
}

impl Frame {
    /// A frame with nothing drawn yet.
    pub fn new() -> Frame {
        Frame::default()
    }

    /// Lines on screen now.
    pub fn drawn(&self) -> usize {
        self.drawn
    }

    /// What replaces the frame on screen with `lines` (no newline at the
    /// end: the sink adds it, which leaves the cursor below the frame).
    pub fn redraw(&mut self, lines: &[String]) -> String {
        let mut out = String::new();
        ansi(BeginSynchronizedUpdate, &mut out);
        if self.drawn == 0 {
            ansi(Hide, &mut out);
        } else {
            ansi(MoveToPreviousLine(self.drawn as u16), &mut out);
        }
        for (i, l) in lines.iter().enumerate() {
            if i > 0 {
                out.push('\n');
            }
            ansi(MoveToColumn(0), &mut out);
            let _ = write!(out, "{l}");
            ansi(Clear(ClearType::UntilNewLine), &mut out);
        }
        ansi(Clear(ClearType::FromCursorDown), &mut out);
        ansi(EndSynchronizedUpdate, &mut out);
        self.drawn = lines.len().max(1);
        out
    }

    /// What erases the frame and leaves the cursor on its first line, so
    /// the next output takes its place (no newline needed after it: it
    /// ends one line up, for the sink's newline to land on the first).
    pub fn erase(&mut self) -> String {
        let mut out = String::new();
        if self.drawn > 0 {
            ansi(MoveToPreviousLine(self.drawn as u16), &mut out);
            ansi(Clear(ClearType::FromCursorDown), &mut out);
            // One line up: the sink's newline brings the cursor back here.
            out.push_str("\x1b[1A");
        }
        ansi(Show, &mut out);
        self.drawn = 0;
        out
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redraw_goes_back_over_the_last_frame() {
        let mut f = Frame::new();
        let first = f.redraw(&["a".into(), "b".into()]);
        assert!(first.contains("a"), "{first:?}");
        assert!(!first.contains("\x1b[2F"), "nothing to go back over yet");
        let second = f.redraw(&["c".into()]);
        assert!(second.contains("\x1b[2F"), "back two lines: {second:?}");
        assert!(second.contains("\x1b[J"), "clears below: {second:?}");
        assert_eq!(f.drawn(), 1);
        let gone = f.erase();
        assert!(
            gone.contains("\x1b[1F") && gone.contains("\x1b[?25h"),
            "{gone:?}"
        );
        assert_eq!(f.drawn(), 0);
    }
}
