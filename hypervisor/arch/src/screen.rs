//! The screen console: VGA text memory (a BIOS boot) or the framebuffer GRUB hands over (a
//! UEFI boot: multiboot2's framebuffer tag, direct RGB), with `font8x8`'s glyphs drawn in
//! 8×16 cells (each glyph row twice). The text grid is `hv_core::screen::Grid`.
//!
//! Writing and drawing are apart: [`write`] only updates the grid (memory, under the
//! console's lock: cheap); [`flush`] draws the cells that differ from what the screen shows,
//! a row at a time, taking the grid's lock only to copy a row, within a time budget: the
//! writer calls it after letting go of the console lock, and CPU 0's housekeeping calls it
//! too, so whatever a budget left undrawn appears within a tick, and a burst of output costs
//! one redraw of what changed, not one per line. Through uncached framebuffer memory a
//! full redraw is millions of stores; nothing holds the console lock meanwhile.
use crate::layout::{SCREEN_MAX, SCREEN_VA};
use hv_core::screen::{Grid, MAX_COLS, MAX_ROWS};
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
        let (base, len) = self.phys();
        let (cols, rows) = self.cells();
        // Cells and pixels are written as whole u16/u32 words: their addresses must be
        // aligned for that, so the base and the pitch must be.
        let ok = match *self {
            Mode::Text { pa, cols, pitch, .. } => pitch >= 2 * cols && pa % 2 == 0 && pitch % 2 == 0,
            Mode::Rgb { pa, width, pitch, bpp, .. } => {
                let unit = u64::from(if bpp == 24 { 1 } else { bpp / 8 });
                matches!(bpp, 16 | 24 | 32) && u64::from(pitch) >= u64::from(width) * u64::from(bpp / 8) && pa % unit == 0 && u64::from(pitch) % unit == 0
            }
        };
        // Inside the architectural physical address space (52 bits).
        ok && cols > 0 && rows > 0 && len > 0 && len <= SCREEN_MAX && base.checked_add(len).is_some_and(|e| e <= 1 << 52)
    }
}

struct Screen {
    mode: Option<Mode>,
    /// `SCREEN_VA` plus the offset of the memory in its first page.
    base: u64,
    grid: Grid,
    /// Bumped by every write (the drawer knows whether it caught up).
    generation: u64,
}

/// The text (a leaf lock, taken under the console's).
static SCREEN: Mutex<Screen> = Mutex::new(Screen { mode: None, base: 0, grid: Grid::new(1, 1), generation: 0 });

/// What the screen shows, per cell: the drawer's own (try-locked: one drawer at a time).
struct Drawn {
    cells: [[u8; MAX_COLS]; MAX_ROWS],
    generation: u64,
}

/// A screen was started (set once): without one, flushes (CPU 0's every tick, every log
/// line) return after one load.
static ACTIVE: core::sync::atomic::AtomicBool = core::sync::atomic::AtomicBool::new(false);

static DRAWN: Mutex<Drawn> = Mutex::new(Drawn { cells: [[0; MAX_COLS]; MAX_ROWS], generation: u64::MAX });

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

/// Maps `mode`'s memory at `SCREEN_VA` (its page tables from `src`, in the shared slots of
/// `template`), then starts the console on it with `backlog` (what the console printed so
/// far) drawn. False, and no screen, if the mode is not [`Mode::usable`] or mapping fails.
pub fn start(mode: Mode, backlog: &[u8], template: crate::physmem::PrivateFrame, src: &mut dyn crate::paging::FrameSource) -> bool {
    let (pa, len) = mode.phys();
    if !mode.usable() || crate::paging::map_screen(template, src, pa, len).is_err() {
        return false;
    }
    let (cols, rows) = mode.cells();
    {
        let mut s = SCREEN.lock();
        s.grid.reset(cols, rows);
        if let Mode::Rgb { .. } = mode {
            s.grid.set_jump(rows / 4);
        }
        s.base = SCREEN_VA + (pa & 0xFFF);
        s.mode = Some(mode);
        put(&mut s, backlog);
    }
    ACTIVE.store(true, core::sync::atomic::Ordering::Release);
    // Nothing is known of what the screen shows: every cell is drawn once.
    if let Some(mut d) = DRAWN.try_lock() {
        for r in d.cells.iter_mut() {
            r.fill(0);
        }
        d.generation = u64::MAX;
    }
    draw_changes(u64::MAX, false);
    true
}

/// Frees the screen's locks whoever holds them, and has the next flush look at every row
/// (`crate::stop`, once every other CPU is halted).
///
/// # Safety
/// As `console::force_unlock`.
pub(crate) unsafe fn force_unlock() {
    // SAFETY: guaranteed by the caller.
    unsafe {
        SCREEN.force_unlock();
        DRAWN.force_unlock();
    }
    if let Some(mut d) = DRAWN.try_lock() {
        d.generation = u64::MAX;
    }
}

/// Puts console output into the grid (a no-op without a screen); drawn by [`flush`].
pub fn write(b: &[u8]) {
    if ACTIVE.load(core::sync::atomic::Ordering::Acquire) {
        put(&mut SCREEN.lock(), b);
    }
}

/// As [`write`], but gives up rather than wait for the screen's lock (emergency output).
pub fn try_write(b: &[u8]) {
    if let Some(mut s) = SCREEN.try_lock() {
        put(&mut s, b);
    }
}

fn put(s: &mut Screen, b: &[u8]) {
    if s.mode.is_some() {
        for &c in b {
            s.grid.put(c, &mut |_, _, _| {});
        }
        s.generation = s.generation.wrapping_add(1);
    }
}

/// Draws what changed since the last flush, for at most `budget` TSC ticks (then the rest
/// waits for the next flush). Returns at once if another CPU is drawing. Takes the grid's
/// lock only to copy a row: never call it with the console lock held.
pub fn flush(budget: u64) {
    draw_changes(budget, false);
}

/// As [`flush`], with no time limit, from a context that must not wait for a lock (a fatal
/// error's report: the interrupted code may hold the grid's); gives up if it would wait.
pub fn flush_emergency() {
    draw_changes(u64::MAX, true);
}

fn draw_changes(budget: u64, no_wait: bool) {
    if !ACTIVE.load(core::sync::atomic::Ordering::Acquire) {
        return;
    }
    let Some(mut d) = DRAWN.try_lock() else { return };
    let start = crate::cpu::rdtsc();
    let grid = || if no_wait { SCREEN.try_lock() } else { Some(SCREEN.lock()) };
    let (mode, base, rows, cols, generation) = {
        let Some(s) = grid() else { return };
        let Some(m) = s.mode else { return };
        let (c, r) = s.grid.size();
        (m, s.base, r, c, s.generation)
    };
    if d.generation == generation {
        return;
    }
    let mut row = [b' '; MAX_COLS];
    let mut drew = false;
    for r in 0..rows {
        {
            let Some(s) = grid() else { return };
            for (c, cell) in row.iter_mut().enumerate().take(cols) {
                *cell = s.grid.at(c, r);
            }
        }
        for (c, &ch) in row.iter().enumerate().take(cols) {
            if d.cells[r][c] != ch {
                draw(&mode, base, c, r, ch);
                d.cells[r][c] = ch;
                drew = true;
            }
        }
        // The budget counts only once something was drawn: every pass makes progress
        // (rows drawn before are skipped quickly by the next).
        if drew && crate::cpu::rdtsc().wrapping_sub(start) > budget {
            return;
        }
    }
    // Caught up with the writes seen at the start (later ones flush again).
    d.generation = generation;
}
