//! Host profile of the validated L1 update path (run under `valgrind --tool=callgrind` to
//! count instructions): N updates of one L1 entry alternating between two writable frames.
use guest_abi::DomId;
use hv_core::frame::{FrameTable, Owner};
use hv_core::mem::{Mfn, Page, PhysMem};
use hv_core::pt::Pt;
use hv_core::pte::Pte;

struct Mem(Vec<Page>);
impl PhysMem for Mem {
    fn read(&self, m: Mfn, off: usize, out: &mut [u8]) -> Option<()> {
        out.copy_from_slice(self.0.get(m.0 as usize)?.get(off..off + out.len())?);
        Some(())
    }
    fn write(&mut self, m: Mfn, off: usize, data: &[u8]) -> Option<()> {
        self.0.get_mut(m.0 as usize)?.get_mut(off..off + data.len())?.copy_from_slice(data);
        Some(())
    }
}

fn main() {
    let n: usize = std::env::args().nth(1).and_then(|a| a.parse().ok()).unwrap_or(100_000);
    let mut mem = Mem(vec![[0u8; 4096]; 16]);
    let ft = FrameTable::new(hv_core::frame::slots(16));
    const D: DomId = 0;
    for m in 0..16 {
        ft.set_owner(Mfn(m), Owner::Dom(D)).unwrap();
    }
    let mut tlb = hv_core::pt::CountFlushes::default();
    let mut jobs = hv_core::pt::Jobs::default();
    let mut budget = u64::MAX;
    let mut pt = Pt { mem: &mut mem, ft: &ft, ram_end: Mfn(16), io: None, tlb: &mut tlb, jobs: &mut jobs, vcpu: 0, budget: &mut budget };
    pt.pin(Mfn(1), 1, D).unwrap();
    for i in 0..n {
        let target = if i % 2 == 0 { 5 } else { 6 };
        let r = pt.update_entry(Mfn(1), 0, Pte(target << 12 | 0x63), D, D, false);
        assert!(r.is_ok());
    }
    println!("{n} updates done");
}
