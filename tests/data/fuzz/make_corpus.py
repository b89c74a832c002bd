#!/usr/bin/env python3
"""Writes the seed corpus of tests/fuzz_test.cpp: one small valid file per parser, from which the
mutation loop derives its inputs. Standard library only; run it here to regenerate."""
import gzip, json, struct, zlib
from pathlib import Path

here = Path(__file__).resolve().parent
data = here.parent
repo = data.parent.parent


def write(path, payload):
    path = here / path
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_bytes(payload)


def copy(source, path):
    write(path, Path(source).read_bytes())


# safetensors: two F32 tensors and a __metadata__ block, as moejet writes them.
tensors = {"a.weight": ("F32", [2, 3], struct.pack("<6f", *range(6))),
           "a.bias": ("F32", [2], struct.pack("<2f", 1.0, -1.0))}
header, offset, blob = {"__metadata__": {"moejet.step": "3"}}, 0, b""
for name, (dtype, shape, raw) in tensors.items():
    header[name] = {"dtype": dtype, "shape": shape, "data_offsets": [offset, offset + len(raw)]}
    offset += len(raw)
    blob += raw
text = json.dumps(header, separators=(",", ":")).encode()
text += b" " * (-len(text) % 8)
write("safetensors/small.safetensors", struct.pack("<Q", len(text)) + text + blob)

# torch.save zips: copies of two of the reader's own fixtures.
for name in ["tiny_state_dict.pth", "tiny_train_checkpoint.pth"]:
    copy(data / name, "pth/" + name)

# IDX: 3 images of 4x5 and their labels, plain and gzipped.
images = struct.pack(">IIII", 0x803, 3, 4, 5) + bytes(range(60))
labels = struct.pack(">II", 0x801, 3) + bytes([1, 0, 2])
write("idx/images.idx", images)
write("idx/labels.idx", labels)
write("idx/images.idx.gz", gzip.compress(images, mtime=0))

# CIFAR-10 binary: 2 records of label + 3072 pixel bytes. STL-10: 1 image of 96x96x3, label 1..10.
write("cifar/data_batch_1.bin", b"".join(bytes([k]) + bytes((k * 7 + i) % 256 for i in range(3072)) for k in range(2)))
write("stl/test_X.bin", bytes(i % 251 for i in range(96 * 96 * 3)))
write("stl/test_y.bin", bytes([3]))

# JSON: a training config and a super-class file.
copy(repo / "configs" / "vit_fmnist.json", "json/vit_fmnist.json")
write("json/superclasses.json", json.dumps({"num_superclasses": 2, "superclass_of": [0, 1, 0],
                                            "class_names": ["a", "b", "c"]}).encode())

# Images: a CIFAR JPEG, and a 3x2 RGB PNG, PGM and BMP.
copy(data / "cifar10_jpg" / "test" / "cat" / "0000.jpg", "image/cat.jpg")
w, h = 3, 2
rows = b"".join(b"\x00" + bytes((x * 40 + y * 90 + c * 13) % 256 for x in range(w) for c in range(3)) for y in range(h))
def chunk(kind, body):
    return struct.pack(">I", len(body)) + kind + body + struct.pack(">I", zlib.crc32(kind + body) & 0xffffffff)
write("image/small.png", b"\x89PNG\r\n\x1a\n" + chunk(b"IHDR", struct.pack(">IIBBBBB", w, h, 8, 2, 0, 0, 0)) +
      chunk(b"IDAT", zlib.compress(rows)) + chunk(b"IEND", b""))
write("image/small.pgm", b"P5\n3 2\n255\n" + bytes([0, 50, 100, 150, 200, 250]))
# BMP rows run bottom-up in BGR order, each padded to 4 bytes (3 pixels x 3 bytes + 3).
bmp_body = b"".join(bytes((x * 40 + y * 90 + c * 13) % 256 for x in range(w) for c in (2, 1, 0)) + b"\x00" * 3
                    for y in reversed(range(h)))
write("image/small.bmp", b"BM" + struct.pack("<IHHI", 54 + len(bmp_body), 0, 0, 54) +
      struct.pack("<IiiHHIIiiII", 40, w, h, 1, 24, 0, len(bmp_body), 2835, 2835, 0, 0) + bmp_body)
