//! An encoder's outputs, one per variant in use (a JPEG quality and size, an H.264 bitrate and
//! size): made when the first viewer asks for the variant, forgotten once nobody listens, and at
//! most `max` at once, since each costs one encode per frame.

use std::collections::BTreeMap;
use std::fmt::Display;
use std::sync::atomic::AtomicBool;
use std::sync::{Arc, Mutex, PoisonError};

use crate::error::ServiceError;
use crate::fanout::{Demand, Fanout, Subscriber};
use crate::frame::EncodedFrame;

/// One variant's stream.
pub struct VariantOutput {
    pub out: Fanout<EncodedFrame>,
    /// The next frame of this variant must be a keyframe (H.264: a peer joined, switched or lost
    /// pictures; every JPEG is one anyway).
    #[cfg_attr(not(feature = "webrtc"), allow(dead_code))] // read by the H.264 encoder only
    pub keyframe: AtomicBool,
}

pub struct Outputs<V> {
    /// "encoder 'front_jpeg'", for error messages.
    owner: String,
    max: usize,
    outputs: Mutex<BTreeMap<V, Arc<VariantOutput>>>,
    /// Subscribers over all variants: the encoder follows it.
    demand: Demand,
}

impl<V: Ord + Copy + Display> Outputs<V> {
    pub fn new(owner: String, max: usize) -> Self {
        Self {
            owner,
            max,
            outputs: Mutex::new(BTreeMap::new()),
            demand: Demand::new(),
        }
    }

    /// Subscribers over all variants, announced at every change.
    pub fn demand(&self) -> &Demand {
        &self.demand
    }

    /// Forgets variants nobody listens to; returns those still listened to.
    pub fn active(&self) -> Vec<(V, Arc<VariantOutput>)> {
        let mut outputs = self.outputs.lock().unwrap_or_else(PoisonError::into_inner);
        outputs.retain(|_, o| o.out.has_subscribers());
        outputs.iter().map(|(v, o)| (*v, o.clone())).collect()
    }

    /// The variants being encoded now, e.g. `["q50", "q80", "q40/2"]`.
    pub fn in_use(&self) -> Vec<String> {
        self.active()
            .into_iter()
            .map(|(v, _)| v.to_string())
            .collect()
    }

    /// Subscribers over all variants.
    #[cfg_attr(not(feature = "webrtc"), allow(dead_code))] // the H.264 encoder's stats
    pub fn listeners(&self) -> usize {
        self.active()
            .iter()
            .map(|(_, o)| o.out.subscriber_count())
            .sum()
    }

    /// The stream of `variant`, started if it is new and there is room.
    pub fn subscribe(&self, variant: V) -> Result<Subscriber<EncodedFrame>, ServiceError> {
        let mut outputs = self.outputs.lock().unwrap_or_else(PoisonError::into_inner);
        if !outputs.contains_key(&variant) {
            outputs.retain(|_, o| o.out.has_subscribers());
            if outputs.len() >= self.max {
                let used: Vec<String> = outputs.keys().map(V::to_string).collect();
                return Err(ServiceError::Busy(format!(
                    "{} already encodes {} variants ({}); ask for one of those",
                    self.owner,
                    outputs.len(),
                    used.join(", ")
                )));
            }
        }
        let output = outputs.entry(variant).or_insert_with(|| {
            Arc::new(VariantOutput {
                out: Fanout::with_demand(self.demand.clone()),
                keyframe: AtomicBool::new(false),
            })
        });
        Ok(output.out.subscribe())
    }

    /// The output of `variant`, if someone listens to it.
    #[cfg_attr(not(feature = "webrtc"), allow(dead_code))] // H.264 keyframe requests
    pub fn get(&self, variant: &V) -> Option<Arc<VariantOutput>> {
        self.outputs
            .lock()
            .unwrap_or_else(PoisonError::into_inner)
            .get(variant)
            .cloned()
    }
}
