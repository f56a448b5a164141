//! A refresh's pushes gathered by topic before they go to the engine.
//!
//! A refresh of listed devices walks them by UDID, and with many tenants consecutive devices
//! belong to different tenants. Pushed in that order, every push would travel alone on its
//! tenant's APNs connection: one write, one read and a few wake-ups each, on both ends.
//! Gathered by topic, a tenant's pushes reach its connection together and share them. The
//! groups are bounded: a group is let go once it holds `group` pushes, and every group once
//! all of them together hold `held` ([`TopicGroups::new`]). A refresh of every tenant walks
//! them one after another, and lets a tenant's last group go as soon as the walk has passed
//! it ([`TopicGroups::take_before`]).

use std::collections::BTreeMap;
use std::sync::Arc;

/// Pushes (anything with a topic) gathered by topic, in the order each topic's came.
#[derive(Debug)]
pub(crate) struct TopicGroups<T> {
    by_topic: BTreeMap<Option<Arc<str>>, Vec<T>>,
    /// Pushes held in every group together.
    count: usize,
    /// A group this large is let go at once.
    group: usize,
    /// When every group together holds this many, they are all let go.
    held: usize,
}

impl<T> TopicGroups<T> {
    /// Groups let go at `group` pushes each, or all of them at `held` in all.
    pub(crate) fn new(group: usize, held: usize) -> Self {
        TopicGroups {
            by_topic: BTreeMap::new(),
            count: 0,
            group: group.max(1),
            held: held.max(1),
        }
    }

    /// Adds a push for `topic`; returns the groups to send now (none, the topic's full group,
    /// or every group when the bound on all of them is reached).
    pub(crate) fn add(&mut self, topic: Option<Arc<str>>, push: T) -> Vec<Vec<T>> {
        let group = self.by_topic.entry(topic.clone()).or_default();
        group.push(push);
        self.count += 1;
        if self.count >= self.held {
            return self.drain();
        }
        if group.len() >= self.group {
            let full = self.by_topic.remove(&topic).unwrap_or_default();
            self.count -= full.len();
            return vec![full];
        }
        Vec::new()
    }

    /// Every group held, by topic; the groups are then empty.
    pub(crate) fn drain(&mut self) -> Vec<Vec<T>> {
        self.count = 0;
        std::mem::take(&mut self.by_topic).into_values().collect()
    }

    /// Lets go every group whose topic sorts before `topic` (bytewise; no topic first): a
    /// walk in topic order is past them, so no push will join them.
    pub(crate) fn take_before(&mut self, topic: &str) -> Vec<Vec<T>> {
        let rest = self.by_topic.split_off(&Some(Arc::from(topic)));
        let passed = std::mem::replace(&mut self.by_topic, rest);
        let groups: Vec<Vec<T>> = passed.into_values().collect();
        self.count -= groups.iter().map(Vec::len).sum::<usize>();
        groups
    }

    /// Pushes held now.
    #[cfg(test)]
    fn len(&self) -> usize {
        self.count
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn topic(name: &str) -> Option<Arc<str>> {
        Some(Arc::from(name))
    }

    #[test]
    fn interleaved_topics_come_out_gathered_in_their_own_order() {
        let mut groups = TopicGroups::new(100, 1000);
        for i in 0..9 {
            let t = ["a", "b", "c"][i % 3];
            assert!(groups.add(topic(t), i).is_empty());
        }
        assert_eq!(groups.len(), 9);
        let out = groups.drain();
        assert_eq!(out, vec![vec![0, 3, 6], vec![1, 4, 7], vec![2, 5, 8]]);
        assert_eq!(groups.len(), 0);
        assert!(groups.drain().is_empty());
    }

    #[test]
    fn a_full_group_goes_at_once_and_the_others_wait() {
        let mut groups = TopicGroups::new(3, 1000);
        assert!(groups.add(topic("a"), 1).is_empty());
        assert!(groups.add(topic("b"), 2).is_empty());
        assert!(groups.add(topic("a"), 3).is_empty());
        assert_eq!(groups.add(topic("a"), 4), vec![vec![1, 3, 4]]);
        assert_eq!(groups.len(), 1);
        assert_eq!(groups.drain(), vec![vec![2]]);
    }

    #[test]
    fn the_bound_on_all_groups_lets_every_group_go() {
        let mut groups = TopicGroups::new(100, 4);
        assert!(groups.add(topic("a"), 1).is_empty());
        assert!(groups.add(None, 2).is_empty());
        assert!(groups.add(topic("b"), 3).is_empty());
        let out = groups.add(topic("a"), 4);
        assert_eq!(out, vec![vec![2], vec![1, 4], vec![3]]);
        assert_eq!(groups.len(), 0);
    }

    #[test]
    fn a_walk_in_topic_order_lets_the_topics_it_passed_go() {
        let mut groups = TopicGroups::new(100, 1000);
        for (t, i) in [(None, 0), (topic("a"), 1), (topic("b"), 2), (topic("c"), 3)] {
            assert!(groups.add(t, i).is_empty());
        }
        assert_eq!(groups.take_before("b"), vec![vec![0], vec![1]]);
        assert_eq!(groups.len(), 2);
        assert!(groups.take_before("b").is_empty());
        assert_eq!(groups.drain(), vec![vec![2], vec![3]]);
    }

    #[test]
    fn every_push_comes_out_once() {
        let mut groups = TopicGroups::new(7, 50);
        let mut out = Vec::new();
        for i in 0..1000u32 {
            let t = format!("t{}", (i * 7919) % 13);
            out.extend(groups.add(topic(&t), i).into_iter().flatten());
        }
        out.extend(groups.drain().into_iter().flatten());
        out.sort_unstable();
        assert_eq!(out, (0..1000).collect::<Vec<_>>());
    }
}
