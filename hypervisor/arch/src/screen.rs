//! The screen console: VGA text memory (a BIOS boot) or the framebuffer GRUB hands over (a
//! UEFI boot: multiboot2's framebuffer tag, direct RGB), with `font8x8`'s glyphs drawn in
//! 8×16 cells (each glyph row twice). The text grid is `hv_core::screen::Grid`; this module
//! only draws its cells, at `layout::SCREEN_VA`, mapped once the hypervisor has its own
//! page tables ([`start`]). Everything the serial console prints is drawn here too.

use crate::layout::{SCREEN_MAX, SCREEN_VA};
use hv_core::screen::Grid;
use spin::Mutex;

/// What the bootloader described.
#[derive(Copy, Clone, Debug, PartialEq, Eq)]
pub enum Mode {
    /// EGA/VGA text: `cols` × `rows` 16-bit cells, `pitch` bytes a row.
    Text { pa: u64, cols: u32, rows: u32, pitch: u32 },
    /// Direct colour: `bpp` 16, 24 or 32; each colour's (bit position, size).
    Rgb { pa: u64, width: u32, height: u32, pitch: u32, bpp: u8, red: (u8, u8), green: (u8, u8), blue: (u8, u8) },
}

impl Mode {
    pub fn phys(&self) -> (u64, u64) {
        match *self {
            Mode::Text { pa, rows, pitch, .. } => (pa, u64::from(rows) * u64::from(pitch)),
            Mode::Rgb { pa, height, pitch, .. } => (pa, u64::from(height) * u64::from(pitch)),
        }
    }

    /// The grid it holds.
    pub fn cells(&self) -> (usize, usize) {
        match *self {
            Mode::Text { cols, rows, .. } => (cols as usize, rows as usize),
            Mode::Rgb { width, height, .. } => (width as usize / 8, height as usize / 16),
        }
    }

    /// Usable by this module (and small enough to map)?
    pub fn usable(&self) -> bool {
        let (_, len) = self.phys();
        let (cols, rows) = self.cells();
        let ok = match *self {
            Mode::Text { cols, pitch, .. } => pitch >= 2 * cols,
            Mode::Rgb { width, pitch, bpp, .. } => matches!(bpp, 16 | 24 | 32) && u64::from(pitch) >= u64::from(width) * u64::from(bpp / 8),
        };
        ok && cols > 0 && rows > 0 && len > 0 && len <= SCREEN_MAX
    }
}

struct Screen {
    mode: Option<Mode>,
    /// `SCREEN_VA` plus the offset of the memory in its first page.
    base: u64,
    grid: Grid,
}

static SCREEN: Mutex<Screen> = Mutex::new(Screen { mode: None, base: 0, grid: Grid::new(1, 1) });

/// The colour word of a pixel with every channel at `level` (0 or full).
fn pixel(mode: &Mode, on: bool) -> u32 {
    let Mode::Rgb { red, green, blue, .. } = *mode else { return 0 };
    if !on {
        return 0;
    }
    [red, green, blue].iter().fold(0u32, |a, &(pos, size)| a | (((1u64 << size.min(32)) - 1) as u32) << pos.min(31))
}

/// Draws character `ch` in cell (`col`, `row`) of the screen memory of `mode` at `base`.
fn draw(mode: &Mode, base: u64, col: usize, row: usize, ch: u8) {
        match *mode {
            Mode::Text { pitch, .. } => {
                let at = base + row as u64 * u64::from(pitch) + col as u64 * 2;
                // SAFETY: inside the text memory mapped at SCREEN_VA (`col`, `row` are in the
                // grid, which is the mode's size); nothing else maps it.
                unsafe { (at as *mut u16).write_volatile(0x0700 | u16::from(ch)) };
            }
            Mode::Rgb { pitch, bpp, .. } => {
                let glyph = font8x8::legacy::BASIC_LEGACY[usize::from(ch & 0x7F)];
                let (fg, bg) = (pixel(mode, true), pixel(mode, false));
                let bytes = u64::from(bpp / 8);
                for y in 0..16u64 {
                    let bits = glyph[(y / 2) as usize];
                    let line = base + (row as u64 * 16 + y) * u64::from(pitch) + col as u64 * 8 * bytes;
                    for x in 0..8u64 {
                        let v = if bits & (1 << x) != 0 { fg } else { bg };
                        let at = line + x * bytes;
                        // SAFETY: inside the framebuffer mapped at SCREEN_VA: the cell is in
                        // the grid (width / 8 × height / 16) and `pitch` covers a row.
                        unsafe {
                            match bpp {
                                32 => (at as *mut u32).write_volatile(v),
                                16 => (at as *mut u16).write_volatile(v as u16),
                                _ => {
                                    for k in 0..3 {
                                        ((at + k) as *mut u8).write_volatile((v >> (8 * k)) as u8);
                                    }
                                }
                            }
                        }
                    }
                }
            }
        }
}

/// Starts drawing on `mode` (its memory already mapped at `SCREEN_VA` by
/// `paging::map_screen`): clears it and draws `backlog` (what the console printed so far).
pub fn start(mode: Mode, backlog: &[u8]) {
    let (cols, rows) = mode.cells();
    let mut s = SCREEN.lock();
    s.grid.reset(cols, rows);
    s.base = SCREEN_VA + (mode.phys().0 & 0xFFF);
    s.mode = Some(mode);
    let base = s.base;
    s.grid.redraw(&mut |c, r, ch| draw(&mode, base, c, r, ch));
    put(&mut s, backlog);
}

fn put(s: &mut Screen, b: &[u8]) {
    let (Some(mode), base) = (s.mode, s.base) else { return };
    for &c in b {
        s.grid.put(c, &mut |col, row, ch| draw(&mode, base, col, row, ch));
    }
}

/// Draws console output (a no-op without a screen). Called under the console's lock.
pub fn write(b: &[u8]) {
    put(&mut SCREEN.lock(), b);
}

/// As [`write`], but gives up rather than wait for the screen's lock (emergency output).
pub fn try_write(b: &[u8]) {
    if let Some(mut g) = SCREEN.try_lock() {
        put(&mut g, b);
    }
}

/// The screen's size in cells, if there is one.
pub fn size() -> Option<(usize, usize)> {
    let s = SCREEN.lock();
    s.mode.map(|_| s.grid.size())
}
