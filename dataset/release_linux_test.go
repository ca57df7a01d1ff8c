package dataset

import (
	"encoding/binary"
	"os"
	"testing"
	"unsafe"
)

// resident counts the pages of data that are in this process's page
// table, from /proc/self/pagemap (bit 63 of a page's entry: present).
func resident(t *testing.T, data string) (present, pages int) {
	t.Helper()
	f, err := os.Open("/proc/self/pagemap")
	if err != nil {
		t.Skipf("no pagemap here: %v", err)
	}
	defer f.Close()
	page := uintptr(os.Getpagesize())
	p := uintptr(unsafe.Pointer(unsafe.StringData(data)))
	first, last := p/page, (p+uintptr(len(data))-1)/page
	buf := make([]byte, 8*(last-first+1))
	if _, err := f.ReadAt(buf, int64(first*8)); err != nil {
		t.Skipf("pagemap unreadable: %v", err)
	}
	for i := 0; i < len(buf); i += 8 {
		if binary.LittleEndian.Uint64(buf[i:])>>63 == 1 {
			present++
		}
	}
	return present, len(buf) / 8
}

// Opening the built-in set reads its gzipped file once and then gives its
// pages back: they are no longer resident in this process, and opening the
// set again reads the same images.
func TestBuiltinPagesReleased(t *testing.T) {
	first, err := Open(MNIST, Test)
	if err != nil {
		t.Fatal(err)
	}
	present, pages := resident(t, builtinTest)
	if present > pages/10 {
		t.Errorf("%d of the built-in test file's %d pages are resident after Open", present, pages)
	}
	// Reading it again faults them in: the count sees that.
	var sum byte
	for i := 0; i < len(builtinTest); i += os.Getpagesize() {
		sum += builtinTest[i]
	}
	if again, _ := resident(t, builtinTest); again < pages*9/10 {
		t.Skipf("the page table does not show pages read (%d of %d present): cannot tell", again, pages)
	}
	second, err := Open(MNIST, Test)
	if err != nil {
		t.Fatal(err)
	}
	if string(first.Pix) != string(second.Pix) {
		t.Error("the built-in set read after its pages were released differs")
	}
	t.Logf("%d pages released, checksum byte %d", pages, sum)
}
