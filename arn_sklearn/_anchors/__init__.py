"""Where anchors start: KMeans, random rows, k-plane, and the softness rule."""
