// Entry point for the ELF test fixture; the interesting functions are in elf_fixture.S.
extern "C" int fx_endbr_loop(int);
#include <cstdio>
int main(int argc, char**) {
  std::puts("xolfleet elf fixture");  // gives the binary an undefined
                                      // (imported) symbol
  return fx_endbr_loop(argc) + 0;
}
