//! Lines read a block at a time, and the part of their checking that needs no other line done
//! on every core while the next block is read: hashing and scanning each entry is most of a
//! verification's work, and a customer verifying a million entries should not wait on one core.

use std::io::Read;
use std::num::NonZeroUsize;

/// Bytes read per block: whole lines of about this much, a few thousand typical entries.
const BLOCK: usize = 2 << 20;
/// Below this many lines a block is checked on the calling thread alone.
const WORTH_SPLITTING: usize = 256;

/// Whole lines, each with its newline but perhaps the input's last, in one buffer.
#[derive(Default)]
pub(super) struct Block {
    bytes: Vec<u8>,
    /// Where each line ends (exclusive).
    ends: Vec<usize>,
}

impl Block {
    pub(super) fn lines(&self) -> impl Iterator<Item = &[u8]> {
        let starts = std::iter::once(0).chain(self.ends.iter().copied());
        starts
            .zip(&self.ends)
            .map(|(start, &end)| &self.bytes[start..end])
    }

    pub(super) fn is_empty(&self) -> bool {
        self.ends.is_empty()
    }
}

/// Reads an input into blocks of whole lines.
pub(super) struct Lines<R> {
    input: R,
    /// The start of a line the last block could not hold whole.
    carry: Vec<u8>,
}

impl<R: Read> Lines<R> {
    pub(super) fn new(input: R) -> Lines<R> {
        Lines {
            input,
            carry: Vec::new(),
        }
    }

    /// Fills `block` with the next lines, the input's last even without its newline; empty at
    /// the end of the input. On an I/O error the lines read whole before it are in `block`,
    /// so they are still checked before the error counts.
    pub(super) fn fill(&mut self, block: &mut Block) -> std::io::Result<()> {
        block.bytes.clear();
        block.ends.clear();
        block.bytes.append(&mut self.carry);
        let mut ended = false;
        let mut failed = None;
        // Read until the block is full and holds a newline, or the input ends or fails.
        while block.bytes.len() < BLOCK || memchr::memchr(b'\n', &block.bytes).is_none() {
            let wanted = (BLOCK - block.bytes.len().min(BLOCK)).max(64 << 10);
            block.bytes.reserve(wanted);
            match (&mut self.input)
                .take(wanted as u64)
                .read_to_end(&mut block.bytes)
            {
                Ok(0) => {
                    ended = true;
                    break;
                }
                Ok(_) => {}
                Err(error) => {
                    failed = Some(error);
                    break;
                }
            }
        }
        block
            .ends
            .extend(memchr::memchr_iter(b'\n', &block.bytes).map(|at| at + 1));
        let whole = block.ends.last().copied().unwrap_or(0);
        match failed {
            // A line cut by the error is not a line.
            Some(error) => {
                block.bytes.truncate(whole);
                Err(error)
            }
            None if ended => {
                if whole < block.bytes.len() {
                    block.ends.push(block.bytes.len());
                }
                Ok(())
            }
            None => {
                self.carry.extend_from_slice(&block.bytes[whole..]);
                block.bytes.truncate(whole);
                Ok(())
            }
        }
    }
}

/// The cores lines are checked on; read once per verification (on Linux the answer comes from
/// several files under /proc and /sys).
pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// `check` of every line of `block`, in order, spread over `cores` threads while this thread
/// does `meanwhile` (reads the next block).
pub(super) fn check_while<T: Send, U>(
    block: &Block,
    cores: usize,
    check: fn(&[u8]) -> T,
    meanwhile: impl FnOnce() -> U,
) -> (Vec<T>, U) {
    let lines: Vec<&[u8]> = block.lines().collect();
    if cores < 2 || lines.len() < WORTH_SPLITTING {
        let checked = lines.iter().map(|line| check(line)).collect();
        return (checked, meanwhile());
    }
    let share = lines.len().div_ceil(cores);
    std::thread::scope(|scope| {
        let parts: Vec<_> = lines
            .chunks(share)
            .map(|part| {
                let checked = scope.spawn(move || part.iter().map(|line| check(line)).collect());
                (part, checked)
            })
            .collect();
        let done = meanwhile();
        let mut all: Vec<T> = Vec::with_capacity(lines.len());
        for (part, checked) in parts {
            // A thread that could not finish has its share checked here instead.
            let checked: Vec<T> = checked
                .join()
                .unwrap_or_else(|_| part.iter().map(|line| check(line)).collect());
            all.extend(checked);
        }
        (all, done)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(line: &[u8]) -> Option<u32> {
        std::str::from_utf8(line).ok()?.trim_end().parse().ok()
    }

    #[test]
    fn checks_every_line_in_order_however_the_input_is_cut() {
        let text: String = (0..300_000).map(|n| format!("{n}\n")).collect();
        let mut lines = Lines::new(std::io::Cursor::new(text.into_bytes()));
        let (mut block, mut spare) = (Block::default(), Block::default());
        let mut seen = Vec::new();
        lines.fill(&mut block).unwrap_or_else(|e| panic!("{e}"));
        while !block.is_empty() {
            let (parsed, next) = check_while(&block, 2, parse, || lines.fill(&mut spare));
            next.unwrap_or_else(|e| panic!("{e}"));
            seen.extend(parsed);
            std::mem::swap(&mut block, &mut spare);
        }
        let expected: Vec<_> = (0..300_000).map(Some).collect();
        assert_eq!(seen, expected);
    }

    #[test]
    fn the_last_line_counts_without_its_newline_and_a_long_line_stays_whole() {
        let long = "x".repeat(3 * BLOCK);
        let text = format!("a\n{long}\nb");
        let mut lines = Lines::new(text.as_bytes());
        let mut all = Vec::new();
        let mut block = Block::default();
        loop {
            lines.fill(&mut block).unwrap_or_else(|e| panic!("{e}"));
            if block.is_empty() {
                break;
            }
            all.extend(block.lines().map(<[u8]>::to_vec));
        }
        let expected = [
            b"a\n".to_vec(),
            format!("{long}\n").into_bytes(),
            b"b".to_vec(),
        ];
        assert_eq!(all, expected);
    }

    /// Reads its text, then fails.
    struct Failing<'a>(&'a [u8]);

    impl Read for Failing<'_> {
        fn read(&mut self, buf: &mut [u8]) -> std::io::Result<usize> {
            if self.0.is_empty() {
                return Err(std::io::Error::other("the disk went away"));
            }
            let n = self.0.read(buf)?;
            Ok(n)
        }
    }

    #[test]
    fn lines_read_whole_before_an_error_are_kept_and_a_cut_line_is_not() {
        let mut lines = Lines::new(Failing(b"one\ntwo\nthr"));
        let mut block = Block::default();
        assert!(lines.fill(&mut block).is_err());
        let kept: Vec<&[u8]> = block.lines().collect();
        assert_eq!(kept, [b"one\n".as_slice(), b"two\n"]);
    }
}
