//! Reclaim: what takes slabs out of the depot and the magazines as a whole rather than one
//! at a time: a thread's magazine coming home ([`Depot::absorb`]), `trim` ([`Depot::trim`])
//! and the idle decay ([`Depot::decay`]). Each works on magazines its caller has to itself
//! (frozen, or the exiting thread's own) and on the lists under their locks, and hands the
//! slabs it frees to its caller, who gives their pages back once it holds no lock.

use std::sync::atomic::Ordering::Relaxed;

use super::super::magazine::{Exclusive, Frozen};
use super::Depot;

impl Depot {
    /// A magazine whose thread exits: its slabs move to the lists with their units (freed,
    /// unit and all, when a list's storage cannot grow), its spare units go back, and its
    /// counters fold into the depot's. The caller holds the magazine list's lock and has
    /// taken the magazine out of the list.
    pub(crate) fn absorb(&self, mag: Exclusive<'_>) {
        for k in 0..4 {
            self.retired_hits[k].fetch_add(mag.magazine().hits(k), Relaxed);
            self.retired_returned[k].fetch_add(mag.magazine().returned(k), Relaxed);
            let held = mag.held(k);
            let cached = mag.len(k);
            let mut moved = 0;
            {
                let mut list = self.lists[k].lock();
                let room = list.slabs.try_reserve(cached).is_ok();
                // Oldest first, as they lay in the magazine, with their stamps.
                let mut slabs = Vec::new();
                mag.take_idle_since(k, u64::MAX, &mut slabs);
                for slab in slabs {
                    if room {
                        list.slabs.push(slab);
                        moved += 1;
                    }
                }
            }
            mag.set_held(k, 0);
            self.release_units(k, held - moved);
        }
    }

    /// Takes every idle slab, from the lists and the frozen magazines (their units go too),
    /// into `out`, for the caller to [`release`] once it holds no lock. The lists keep their
    /// storage, so the next return needs no allocation.
    pub(crate) fn trim(&self, frozen: Option<&Frozen<'_>>, out: &mut Vec<Vec<u8>>) {
        for k in 0..4 {
            let before = out.len();
            {
                let mut list = self.lists[k].lock();
                if out.try_reserve(list.slabs.len()).is_err() {
                    list.slabs.clear(); // freed here, rarely, without the madvise
                }
                out.extend(list.slabs.drain(..).map(|(slab, _)| slab));
            }
            self.release_units(k, out.len() - before);
            for mag in frozen.into_iter().flat_map(Frozen::iter) {
                while let Some(slab) = mag.pop(k) {
                    out.push(slab);
                }
                self.release_units(k, mag.held(k));
                mag.set_held(k, 0);
            }
        }
    }

    /// The idle decay: takes every slab that went idle at or before `cutoff` (coarse
    /// milliseconds), from the lists and the frozen magazines, into `out`, with its unit;
    /// and gives back every frozen magazine's spare units (held down to the slabs it
    /// keeps), so a quiet pool's budget reaches zero. Returns how many slabs it took per
    /// class, for the caller to [`count_decayed`](Self::count_decayed) once their pages are
    /// gone.
    pub(crate) fn decay(
        &self,
        frozen: &Frozen<'_>,
        cutoff: u64,
        out: &mut Vec<Vec<u8>>,
    ) -> [u64; 4] {
        let mut taken = [0; 4];
        let mut old = Vec::new();
        for (k, count) in taken.iter_mut().enumerate() {
            let before = out.len();
            {
                let mut list = self.lists[k].lock();
                // Storage for the taken ones first: what it cannot hold stays (rarely).
                let due = list
                    .slabs
                    .iter()
                    .filter(|(_, since)| *since <= cutoff)
                    .count();
                if out.try_reserve(due).is_ok() {
                    list.slabs.retain_mut(|(slab, since)| {
                        let keep = *since > cutoff;
                        if !keep {
                            out.push(std::mem::take(slab));
                        }
                        keep
                    });
                }
            }
            self.release_units(k, out.len() - before);
            for mag in frozen.iter() {
                mag.take_idle_since(k, cutoff, &mut old);
                out.extend(old.drain(..).map(|(slab, _)| slab));
                let (held, kept) = (mag.held(k), mag.len(k));
                mag.set_held(k, kept);
                self.release_units(k, held - kept);
            }
            *count = (out.len() - before) as u64;
        }
        taken
    }

    /// Counts slabs the decay took as decayed, after their pages went back to the system:
    /// a snapshot that reads them decayed never finds their memory still resident.
    pub(crate) fn count_decayed(&self, taken: [u64; 4]) {
        for (counter, n) in self.decayed.iter().zip(taken) {
            counter.fetch_add(n, Relaxed);
        }
    }

    /// Slabs freed by the decay, per class.
    pub(crate) fn decayed(&self, k: usize) -> u64 {
        self.decayed[k].load(Relaxed)
    }
}
