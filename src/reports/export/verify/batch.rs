//! Lines read a batch at a time, and the part of their checking that needs no other line done
//! on every core: hashing and parsing each entry is most of a verification's work, and a
//! customer verifying a million entries should not wait on one core.

use std::io::BufRead;
use std::num::NonZeroUsize;

/// Lines per batch: about a megabyte of typical entries.
const BATCH: usize = 2048;
/// Below this many lines a batch is checked on the calling thread alone.
const WORTH_SPLITTING: usize = 256;

/// The lines of the current batch, each with its newline; buffers are kept for the next.
#[derive(Default)]
pub(super) struct Lines {
    buffers: Vec<Vec<u8>>,
    filled: usize,
}

impl Lines {
    /// Reads up to a batch of lines; `Ok(0)` at the end of the input. On an I/O error the
    /// lines read before it stay in the batch, so they are still checked first.
    pub(super) fn fill<R: BufRead>(&mut self, reader: &mut R) -> std::io::Result<usize> {
        self.filled = 0;
        while self.filled < BATCH {
            if self.buffers.len() == self.filled {
                self.buffers.push(Vec::with_capacity(1024));
            }
            let buffer = &mut self.buffers[self.filled];
            buffer.clear();
            if reader.read_until(b'\n', buffer)? == 0 {
                break;
            }
            self.filled += 1;
        }
        Ok(self.filled)
    }

    pub(super) fn lines(&self) -> &[Vec<u8>] {
        &self.buffers[..self.filled]
    }
}

/// The cores lines are checked on; read once per verification (on Linux the answer comes from
/// several files under /proc and /sys).
pub(super) fn cores() -> usize {
    std::thread::available_parallelism().map_or(1, NonZeroUsize::get)
}

/// `check` of every line, in order, spread over `cores` threads.
pub(super) fn self_check<T: Send>(
    lines: &[Vec<u8>],
    cores: usize,
    check: fn(&[u8]) -> T,
) -> Vec<T> {
    if cores < 2 || lines.len() < WORTH_SPLITTING {
        return lines.iter().map(|line| check(line)).collect();
    }
    let share = lines.len().div_ceil(cores);
    std::thread::scope(|scope| {
        let mut parts = lines.chunks(share);
        let own = parts.next().unwrap_or_default();
        let others: Vec<_> = parts
            .map(|part| {
                let checked = scope.spawn(move || part.iter().map(|line| check(line)).collect());
                (part, checked)
            })
            .collect();
        let mut all: Vec<T> = own.iter().map(|line| check(line)).collect();
        for (part, checked) in others {
            // A thread that could not finish has its share checked here instead.
            let checked: Vec<T> = checked
                .join()
                .unwrap_or_else(|_| part.iter().map(|line| check(line)).collect());
            all.extend(checked);
        }
        all
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn checks_every_line_in_order_however_the_batch_is_split() {
        let text: String = (0..5000).map(|n| format!("{n}\n")).collect();
        let mut reader = std::io::Cursor::new(text.into_bytes());
        let mut batch = Lines::default();
        let mut seen = Vec::new();
        while batch.fill(&mut reader).unwrap_or_else(|e| panic!("{e}")) > 0 {
            let parsed = self_check(batch.lines(), 2, |line| {
                std::str::from_utf8(line)
                    .ok()
                    .and_then(|l| l.trim_end().parse::<u32>().ok())
            });
            seen.extend(parsed);
        }
        let expected: Vec<_> = (0..5000).map(Some).collect();
        assert_eq!(seen, expected);
    }
}
