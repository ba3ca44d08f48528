/* Being written for issue 4; fails until it is. */
#include <stdio.h>
int main(void) {
  puts("not written yet");
  return 1;
}
