//! Device listings read from the store a page at a time, and streamed as they are read.
//!
//! A listing of the whole fleet (the admin API's device list and CSV export, the
//! connectivity report) walks the store [`PAGE`] devices at a time. One page is held in
//! memory, never the whole fleet: at a million devices, the device list built whole took
//! 2.8 GB.
//!
//! A [`Listing`] is text (JSON, CSV) rendered a page at a time by a task of its own. Its
//! channel holds one rendered page, so a slow reader holds the producer back rather than
//! letting the text pile up. The first page is read before the listing is handed over, so a
//! store that fails at once gives an error to answer with. A store that fails later ends the
//! listing with that error, and a producer that stops without saying it is done ends it with
//! [`ServiceError::ListingCut`], never as if the text were complete.

use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use tokio::sync::mpsc;

use magicpush_store::{Device, Store};

use super::{Service, ServiceError};

/// Devices read from the store at a time.
pub(crate) const PAGE: usize = 1_000;

/// Walks every device (or one topic's) a page at a time: in UDID order, or every tenant in
/// turn ([`Pages::by_tenant`]).
pub(crate) struct Pages {
    store: Arc<dyn Store>,
    size: usize,
    order: Order,
    /// The last device read: its topic (in [`Order::ByTenant`]) and UDID.
    after: Option<(String, String)>,
    done: bool,
}

/// Which devices a [`Pages`] walks, in which order.
enum Order {
    /// Every device by UDID.
    Udid,
    /// The devices that enrolled with this topic, by UDID.
    Topic(String),
    /// Every device by topic, then UDID: the stores' key order.
    ByTenant,
}

impl Pages {
    /// Pages of `size` devices (at least one), every device by UDID.
    pub(crate) fn new(store: Arc<dyn Store>, size: usize) -> Self {
        Pages {
            store,
            size: size.max(1),
            order: Order::Udid,
            after: None,
            done: false,
        }
    }

    /// Only the devices that enrolled with `topic` (`None`: every device), read through the
    /// store's topic index.
    pub(crate) fn of_topic(mut self, topic: Option<&str>) -> Self {
        self.order = topic.map_or(Order::Udid, |t| Order::Topic(t.to_owned()));
        self
    }

    /// Every device, one tenant after another (by topic, then UDID): the order the stores
    /// keep devices in, so the walk reads their tables in order.
    pub(crate) fn by_tenant(mut self) -> Self {
        self.order = Order::ByTenant;
        self
    }

    /// The next page, or `None` after the last. Pages are separate reads, not one snapshot:
    /// a device written meanwhile is seen before or after that write, and every device once.
    pub(crate) async fn next(&mut self) -> Result<Option<Vec<Device>>, ServiceError> {
        if self.done {
            return Ok(None);
        }
        let (topic, udid) = match &self.after {
            Some((t, u)) => (Some(t.as_str()), Some(u.as_str())),
            None => (None, None),
        };
        let page = match &self.order {
            Order::Udid => self.store.devices_page(udid, self.size).await?,
            Order::Topic(topic) => {
                self.store
                    .topic_devices_page(topic, udid, self.size)
                    .await?
            }
            Order::ByTenant => {
                let after = topic.zip(udid);
                self.store.devices_page_by_topic(after, self.size).await?
            }
        };
        match page.last() {
            Some(last) if page.len() == self.size => {
                let topic = last.topic.clone().unwrap_or_default();
                self.after = Some((topic, last.udid.clone()));
            }
            // A short page is the last one: no read to learn that the next is empty.
            _ => self.done = true,
        }
        Ok((!page.is_empty()).then_some(page))
    }
}

/// What the producer sends: a rendered page, or the end of a complete listing.
enum Piece {
    Text(Bytes),
    End,
}

/// A listing's text, a page of devices at a time, while it is being read from the store.
pub struct Listing {
    rx: mpsc::Receiver<Result<Piece, ServiceError>>,
    ended: bool,
}

impl std::fmt::Debug for Listing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Listing")
            .field("ended", &self.ended)
            .finish_non_exhaustive()
    }
}

impl Listing {
    /// The next piece of text; `None` once the listing is complete. An error ends it.
    pub fn poll_next(&mut self, cx: &mut Context<'_>) -> Poll<Option<Result<Bytes, ServiceError>>> {
        if self.ended {
            return Poll::Ready(None);
        }
        let piece = match self.rx.poll_recv(cx) {
            Poll::Pending => return Poll::Pending,
            Poll::Ready(piece) => piece,
        };
        Poll::Ready(match piece {
            Some(Ok(Piece::Text(text))) => Some(Ok(text)),
            Some(Ok(Piece::End)) => {
                self.ended = true;
                None
            }
            Some(Err(e)) => {
                self.ended = true;
                Some(Err(e))
            }
            None => {
                self.ended = true;
                Some(Err(ServiceError::ListingCut))
            }
        })
    }

    /// The whole text (for a caller that wants it at once).
    pub async fn collect(mut self) -> Result<Vec<u8>, ServiceError> {
        let mut out = Vec::new();
        while let Some(piece) = std::future::poll_fn(|cx| self.poll_next(cx)).await {
            out.extend_from_slice(&piece?);
        }
        Ok(out)
    }
}

/// Renders one device into the listing's text (or skips it).
pub(crate) type Render = Box<dyn FnMut(&Service, &Device, &mut Vec<u8>) + Send>;

impl Service {
    /// `head`, every device (or `topic`'s) as `render` writes it, then `tail`: read and
    /// rendered a page at a time by a task of its own. Fails only if the first page cannot be read.
    pub(crate) async fn listing(
        self: &Arc<Self>,
        topic: Option<&str>,
        head: Vec<u8>,
        tail: &'static [u8],
        mut render: Render,
    ) -> Result<Listing, ServiceError> {
        let mut pages = Pages::new(Arc::clone(&self.store), PAGE).of_topic(topic);
        let mut text = head;
        if let Some(page) = pages.next().await? {
            page.iter().for_each(|d| render(self, d, &mut text));
        }
        let (tx, rx) = mpsc::channel(1);
        let service = Arc::clone(self);
        tokio::spawn(async move {
            if tx.send(Ok(Piece::Text(text.into()))).await.is_err() {
                return;
            }
            loop {
                let piece = match pages.next().await {
                    Ok(Some(page)) => {
                        let mut text = Vec::new();
                        page.iter().for_each(|d| render(&service, d, &mut text));
                        Piece::Text(text.into())
                    }
                    Ok(None) => break,
                    Err(e) => {
                        tracing::warn!(error = %e, "a device listing stopped part-way");
                        let _ = tx.send(Err(e)).await;
                        return;
                    }
                };
                // The reader went away: stop reading the store for it.
                if tx.send(Ok(piece)).await.is_err() {
                    return;
                }
            }
            if !tail.is_empty() {
                let _ = tx.send(Ok(Piece::Text(Bytes::from_static(tail)))).await;
            }
            let _ = tx.send(Ok(Piece::End)).await;
        });
        Ok(Listing { rx, ended: false })
    }
}

#[cfg(test)]
impl Listing {
    /// A listing of these pieces, complete or (`complete: false`) ended as a producer that
    /// stopped part-way ends it.
    pub(crate) fn of(pieces: &[&'static [u8]], complete: bool) -> Listing {
        let (tx, rx) = mpsc::channel(pieces.len() + 1);
        for piece in pieces {
            let _ = tx.try_send(Ok(Piece::Text(Bytes::from_static(piece))));
        }
        if complete {
            let _ = tx.try_send(Ok(Piece::End));
        }
        Listing { rx, ended: false }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use magicpush_store::MemoryStore;
    use magicpush_testkit::conformance::{authenticate, t};

    /// Every device once: by UDID, or tenant after tenant, across pages.
    #[tokio::test]
    async fn pages_walk_by_udid_or_by_tenant() {
        let store: Arc<dyn Store> = Arc::new(MemoryStore::new());
        for i in 0..7 {
            let mut auth = authenticate(&format!("D{i}"));
            auth.topic = ["t.b", "t.a"][i % 2].into();
            store.authenticate(&auth, None, t(0)).await.unwrap();
        }
        let walk = |pages: Pages| async move {
            let mut pages = pages;
            let mut out = Vec::new();
            while let Some(page) = pages.next().await.unwrap() {
                assert!(page.len() <= 2);
                out.extend(page.into_iter().map(|d| d.udid));
            }
            out
        };
        let by_udid = walk(Pages::new(Arc::clone(&store), 2)).await;
        assert_eq!(by_udid, ["D0", "D1", "D2", "D3", "D4", "D5", "D6"]);
        let by_tenant = walk(Pages::new(Arc::clone(&store), 2).by_tenant()).await;
        assert_eq!(by_tenant, ["D1", "D3", "D5", "D0", "D2", "D4", "D6"]);
        let one = walk(Pages::new(Arc::clone(&store), 2).of_topic(Some("t.a"))).await;
        assert_eq!(one, ["D1", "D3", "D5"]);
    }

    #[tokio::test]
    async fn a_producer_that_vanishes_cuts_the_listing_rather_than_ending_it() {
        let cut = Listing::of(&[b"[1,"], false).collect().await;
        assert!(matches!(cut, Err(ServiceError::ListingCut)), "{cut:?}");
    }

    #[tokio::test]
    async fn an_ended_listing_is_its_pieces_in_order() {
        let whole = Listing::of(&[b"[1,", b"2]"], true).collect().await;
        assert_eq!(whole.unwrap(), b"[1,2]");
    }
}
