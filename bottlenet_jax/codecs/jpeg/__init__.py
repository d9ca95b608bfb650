"""Real JPEG on features: the codec (`codec`: backends, fitted tables), the tiling of C' maps into
one grey image (`tiling`, numpy), the stream format and its byte accounting (`jfif`, numpy + cv2),
the cv2 worker pools (`host`), libjpeg's integer pipeline in XLA (`xla`), exact scan sizes and
libjpeg's per-image optimal tables in XLA (`scan`), and scans under any Huffman tables, fitted to
training images (`huffman`). Importing the package imports none of them."""
