"""One evaluation path: target ranks, then every metric, row, curve point and test from them."""
