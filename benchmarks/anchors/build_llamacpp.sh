#!/bin/sh
# Build llama.cpp's llama-server, llama-batched-bench and llama-bench (CPU) from the llama.cpp that the
# llama-cpp-python sdist vendors: PyPI is the only registry this project may reach, and llama-cpp-python has
# no binary wheel for every machine. The binaries land in $LLAMACPP_DIR/bin (default ~/.cache/temper/llama.cpp).
#   sh benchmarks/anchors/build_llamacpp.sh          # about 10 minutes on 2 cores
set -eu
VERSION=${LLAMA_CPP_PYTHON_VERSION:-0.3.36}
DIR=${LLAMACPP_DIR:-$HOME/.cache/temper/llama.cpp}
PIP=${PIP:-pip}
mkdir -p "$DIR/src"
if [ ! -d "$DIR/src/llama_cpp_python-$VERSION" ]; then
    $PIP download --quiet --no-deps --no-binary :all: "llama-cpp-python==$VERSION" -d "$DIR/src"
    tar xzf "$DIR/src/llama_cpp_python-$VERSION.tar.gz" -C "$DIR/src"
fi
SRC="$DIR/src/llama_cpp_python-$VERSION/vendor/llama.cpp"
cmake -S "$SRC" -B "$DIR/build" -G Ninja -DCMAKE_BUILD_TYPE=Release -DGGML_NATIVE=ON -DLLAMA_CURL=OFF \
    -DLLAMA_BUILD_TESTS=OFF -DLLAMA_BUILD_EXAMPLES=OFF -DLLAMA_BUILD_SERVER=ON -DLLAMA_BUILD_TOOLS=ON \
    -DBUILD_SHARED_LIBS=OFF
cmake --build "$DIR/build" --target llama-server llama-batched-bench llama-bench -j "$(nproc)"
mkdir -p "$DIR/bin"
cp "$DIR/build/bin/llama-server" "$DIR/build/bin/llama-batched-bench" "$DIR/build/bin/llama-bench" "$DIR/bin/"
echo "built: $(ls "$DIR/bin")"
