# How {{name}} is built: the Makefile beside this file names the world and
# includes it. `make` writes build/{{name}}.wasm; `make test` compiles
# src/plugin.c with src/test.c for this machine and runs the test.
#
# The tools (README.md says how to install them) can be given another
# way, e.g. `make WASM_CC=/opt/wasi-sdk/bin/clang`.
WASM_CC     ?= clang-19
WIT_BINDGEN ?= wit-bindgen
WASM_TOOLS  ?= wasm-tools
BUILD       ?= build

# The bindings `wit-bindgen c` generates from wit/: BINDINGS.h, BINDINGS.c
# and BINDINGS_component_type.o, which carries the world into the module.
BINDINGS := $(subst -,_,$(WORLD))
GEN      := $(BUILD)/gen
SOURCES  := src/plugin.c src/glue.c

# A reactor (a library the host calls, without `main`) that uses libc and
# makes no WASI call; -s drops the names, not the world's section.
CFLAGS     ?= -O2 -Wall -Wextra
WASM_FLAGS := --target=wasm32-wasi -mexec-model=reactor -s

all: $(BUILD)/{{name}}.wasm

$(GEN)/$(BINDINGS).c: wit/plugin.wit
	$(WIT_BINDGEN) c wit --world $(WORLD) --out-dir $(GEN)

$(BUILD)/{{name}}.core.wasm: $(SOURCES) src/plugin.h $(GEN)/$(BINDINGS).c
	$(WASM_CC) $(WASM_FLAGS) $(CFLAGS) -Isrc -I$(GEN) $(SOURCES) $(GEN)/$(BINDINGS).c \
		$(GEN)/$(BINDINGS)_component_type.o -o $@

# The core module becomes a component: the file a plugins directory takes.
$(BUILD)/{{name}}.wasm: $(BUILD)/{{name}}.core.wasm
	$(WASM_TOOLS) component new $< -o $@

# The logic alone, natively, with the host's C compiler.
test: $(BUILD)/test
	$(BUILD)/test

$(BUILD)/test: src/plugin.c src/plugin.h src/test.c
	@mkdir -p $(BUILD)
	$(CC) -std=c11 -g -Wall -Wextra -Isrc src/plugin.c src/test.c -o $@

clean:
	rm -rf $(BUILD)

.PHONY: all test clean
