//! The screen console's text grid: what a terminal does with a byte stream (printable
//! characters, `\n`, `\r`, backspace, tab, wrapping at the right edge, scrolling at the
//! bottom; ANSI escape sequences are consumed, `ESC [ 2 J` clears, `ESC [ H` homes, `ESC [ K`
//! clears to the end of the line), reported as cells to redraw. Drawing a cell is the
//! backend's business (`hv_arch::screen`: VGA text memory or a framebuffer with a bitmap
//! font), so this part is tested on the host.

/// Largest grid (a 2560×1600 framebuffer with 8×16 cells is 320×100).
pub const MAX_COLS: usize = 320;
pub const MAX_ROWS: usize = 100;

#[derive(Copy, Clone, Debug, PartialEq, Eq)]
enum Esc {
    None,
    /// After ESC.
    Start,
    /// Inside `ESC [`, with the first parameter so far.
    Csi(u16),
}

/// The grid and its cursor.
pub struct Grid {
    cols: usize,
    rows: usize,
    cells: [[u8; MAX_COLS]; MAX_ROWS],
    x: usize,
    y: usize,
    esc: Esc,
    /// Rows a scroll moves at once (1; more where redrawing is dear: a framebuffer).
    jump: usize,
}

impl Grid {
    /// A blank grid of `cols` × `rows` cells (clamped to 1..=MAX).
    pub const fn new(cols: usize, rows: usize) -> Grid {
        let cols = if cols == 0 { 1 } else if cols > MAX_COLS { MAX_COLS } else { cols };
        let rows = if rows == 0 { 1 } else if rows > MAX_ROWS { MAX_ROWS } else { rows };
        Grid { cols, rows, cells: [[b' '; MAX_COLS]; MAX_ROWS], x: 0, y: 0, esc: Esc::None, jump: 1 }
    }

    /// Blanks the grid in place and gives it `cols` × `rows` cells (clamped as in [`Grid::new`]).
    pub fn reset(&mut self, cols: usize, rows: usize) {
        self.cols = cols.clamp(1, MAX_COLS);
        self.rows = rows.clamp(1, MAX_ROWS);
        for r in self.cells.iter_mut() {
            r.fill(b' ');
        }
        (self.x, self.y, self.esc, self.jump) = (0, 0, Esc::None, 1);
    }

    /// Scrolls `n` rows at a time (clamped to 1..=rows): on a framebuffer, where a scroll
    /// redraws most of the screen's pixels through uncached memory, a few rows at once
    /// cost one redraw where one at a time would cost several.
    pub fn set_jump(&mut self, n: usize) {
        self.jump = n.clamp(1, self.rows);
    }

    pub fn size(&self) -> (usize, usize) {
        (self.cols, self.rows)
    }

    pub fn cursor(&self) -> (usize, usize) {
        (self.x, self.y)
    }

    /// The character at (`col`, `row`) (a space outside the grid).
    pub fn at(&self, col: usize, row: usize) -> u8 {
        if col < self.cols && row < self.rows { self.cells[row][col] } else { b' ' }
    }

    /// Row `row`'s text without trailing spaces.
    pub fn row_text(&self, row: usize) -> &[u8] {
        let r = &self.cells[row.min(self.rows - 1)][..self.cols];
        let n = r.iter().rposition(|&c| c != b' ').map_or(0, |i| i + 1);
        &r[..n]
    }

    fn set(&mut self, col: usize, row: usize, c: u8, draw: &mut impl FnMut(usize, usize, u8)) {
        if self.cells[row][col] != c {
            self.cells[row][col] = c;
            draw(col, row, c);
        }
    }

    fn clear_rows(&mut self, from: usize, draw: &mut impl FnMut(usize, usize, u8)) {
        for row in from..self.rows {
            for col in 0..self.cols {
                self.set(col, row, b' ', draw);
            }
        }
    }

    fn newline(&mut self, draw: &mut impl FnMut(usize, usize, u8)) {
        self.x = 0;
        if self.y + 1 < self.rows {
            self.y += 1;
            return;
        }
        // Scroll by `jump` rows: each cell takes the one `jump` below it; only changed cells
        // are redrawn; the cursor goes to the first freed row.
        let j = self.jump.min(self.rows);
        for row in 0..self.rows {
            for col in 0..self.cols {
                let c = if row + j < self.rows { self.cells[row + j][col] } else { b' ' };
                self.set(col, row, c, draw);
            }
        }
        self.y = self.rows - j;
    }

    /// Feeds one byte of output; `draw(col, row, ch)` is called for each cell that changed.
    /// Bytes outside printable ASCII show as `?` (UTF-8 sequences as one `?` per byte).
    pub fn put(&mut self, b: u8, draw: &mut impl FnMut(usize, usize, u8)) {
        match (self.esc, b) {
            (Esc::Start, b'[') => self.esc = Esc::Csi(0),
            (Esc::Start, _) => self.esc = Esc::None,
            (Esc::Csi(n), b'0'..=b'9') => self.esc = Esc::Csi(n.saturating_mul(10).saturating_add(u16::from(b - b'0'))),
            (Esc::Csi(_), b';' | b'?') => {}
            (Esc::Csi(n), 0x40..=0x7E) => {
                self.esc = Esc::None;
                match b {
                    b'J' if n == 2 => {
                        self.clear_rows(0, draw);
                        (self.x, self.y) = (0, 0);
                    }
                    b'J' => {
                        for col in self.x..self.cols {
                            self.set(col, self.y, b' ', draw);
                        }
                        self.clear_rows(self.y + 1, draw);
                    }
                    b'H' => (self.x, self.y) = (0, 0),
                    b'K' => {
                        for col in self.x..self.cols {
                            self.set(col, self.y, b' ', draw);
                        }
                    }
                    _ => {}
                }
            }
            (Esc::Csi(_), _) => self.esc = Esc::None,
            (Esc::None, 0x1B) => self.esc = Esc::Start,
            (Esc::None, b'\n') => self.newline(draw),
            (Esc::None, b'\r') => self.x = 0,
            (Esc::None, 0x08) => self.x = self.x.saturating_sub(1),
            (Esc::None, b'\t') => {
                let to = ((self.x / 8) + 1) * 8;
                while self.x < to.min(self.cols) {
                    self.printable(b' ', draw);
                }
            }
            (Esc::None, 0x07 | 0x00) => {}
            (Esc::None, c) => self.printable(if (0x20..0x7F).contains(&c) { c } else { b'?' }, draw),
        }
    }

    fn printable(&mut self, c: u8, draw: &mut impl FnMut(usize, usize, u8)) {
        if self.x >= self.cols {
            self.newline(draw);
        }
        self.set(self.x, self.y, c, draw);
        self.x += 1;
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use proptest::prelude::*;
    use std::boxed::Box;
    use std::vec::Vec;

    fn feed(g: &mut Grid, mirror: &mut [Vec<u8>], s: &[u8]) {
        for &b in s {
            g.put(b, &mut |c, r, ch| mirror[r][c] = ch);
        }
    }

    fn text(g: &Grid) -> Vec<&[u8]> {
        (0..g.size().1).map(|r| g.row_text(r)).collect()
    }

    #[test]
    fn lines_wrap_and_scroll() {
        let mut g = Box::new(Grid::new(5, 3));
        let mut m = std::vec![std::vec![b' '; 5]; 3];
        feed(&mut g, &mut m, b"ab\ncdefgh\nij");
        assert_eq!(text(&g), [&b"cdefg"[..], b"h", b"ij"]);
        feed(&mut g, &mut m, b"\rX\x08Y\t");
        assert_eq!(text(&g)[2], b"Y");
        feed(&mut g, &mut m, b"\x1b[2Jq\x1b[1;1Hz\x1b[K");
        assert_eq!(text(&g), [&b"z"[..], b"", b""]);
        feed(&mut g, &mut m, "é\x01".as_bytes());
        assert_eq!(text(&g)[0], b"z???");
    }

    #[test]
    fn jump_scroll() {
        let mut g = Box::new(Grid::new(3, 4));
        g.set_jump(2);
        let mut m = std::vec![std::vec![b' '; 3]; 4];
        feed(&mut g, &mut m, b"a\nb\nc\nd\ne");
        assert_eq!(text(&g), [&b"c"[..], b"d", b"e", b""]);
        assert_eq!(g.cursor(), (1, 2));
    }

    proptest! {
        /// Whatever is written, the cells the backend was told about equal the grid, and
        /// the cursor stays inside it.
        #[test]
        fn drawn_cells_follow_the_grid(cols in 1usize..12, rows in 1usize..6, jump in 1usize..4, s in proptest::collection::vec(any::<u8>(), 0..400)) {
            let mut g = Box::new(Grid::new(cols, rows));
            g.set_jump(jump);
            let mut m = std::vec![std::vec![b' '; cols]; rows];
            feed(&mut g, &mut m, &s);
            for (r, row) in m.iter().enumerate() {
                for (c, &ch) in row.iter().enumerate() {
                    prop_assert_eq!(ch, g.at(c, r));
                }
            }
            let (x, y) = g.cursor();
            prop_assert!(x <= cols && y < rows);
        }
    }
}
