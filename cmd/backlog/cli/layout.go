package cli

import (
	"fmt"
	"io"
	"os"
	"strconv"
	"strings"

	"golang.org/x/term"
)

// defaultWidth is the width of output that does not go to a terminal and
// has no COLUMNS to go by.
const defaultWidth = 80

// outputWidth is the number of columns output to w may use: the
// terminal's width when w is one, else COLUMNS when set, else 80.
func outputWidth(w io.Writer) int {
	if f, ok := w.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		if width, _, err := term.GetSize(int(f.Fd())); err == nil && width > 0 {
			return width
		}
	}
	if n, err := strconv.Atoi(os.Getenv("COLUMNS")); err == nil && n >= 40 {
		return n
	}
	return defaultWidth
}

// para writes text wrapped to width, the first line after lead and the
// others indented as deep as lead is long.
func para(w io.Writer, width int, lead, text string) {
	indent := strings.Repeat(" ", runeLen(lead))
	for i, l := range wrap(text, max(width-runeLen(lead), 20)) {
		if i == 0 {
			fmt.Fprintln(w, strings.TrimRight(lead+l, " "))
		} else {
			fmt.Fprintln(w, indent+l)
		}
	}
}

// A column of a table.
type column struct {
	name string
	// right aligns the column's cells to the right: numbers.
	right bool
	// drop is the order in which columns give way when the table is too
	// wide: the highest first; 0 never gives way.
	drop int
	// wrap lets the cells break over several lines, down to min runes a
	// line, before any column gives way.
	wrap bool
	min  int
}

// A table lays rows out in columns within a width: text columns wrap,
// then columns give way in their order, and what gave way is said. A
// table of cards, too wide for its width, is written as one card a row
// instead: the first cell, then every other one with its column's name.
type table struct {
	cols  []column
	rows  [][]string
	cards bool
}

func (t *table) add(cells ...string) { t.rows = append(t.rows, cells) }

// render returns the table's lines, none wider than width (0: no bound),
// and the names of the columns left out.
func (t *table) render(width int) (lines, left []string) {
	show := make([]bool, len(t.cols))
	for i := range show {
		show[i] = true
	}
	for {
		widths := t.fit(show, width)
		if widths != nil || width <= 0 {
			return t.lines(show, widths), t.leftOut(show)
		}
		// Leave out the column that gives way first.
		worst := -1
		for i, c := range t.cols {
			if show[i] && c.drop > 0 && (worst < 0 || c.drop > t.cols[worst].drop) {
				worst = i
			}
		}
		if worst < 0 {
			// Nothing more can go: cut the cells to what fits.
			return t.lines(show, t.squeeze(show, width)), t.leftOut(show)
		}
		show[worst] = false
	}
}

func (t *table) leftOut(show []bool) []string {
	var left []string
	for i, c := range t.cols {
		if !show[i] {
			left = append(left, c.name)
		}
	}
	return left
}

// natural returns each column's width with nothing wrapped.
func (t *table) natural() []int {
	widths := make([]int, len(t.cols))
	for i, c := range t.cols {
		widths[i] = runeLen(c.name)
		for _, r := range t.rows {
			if i < len(r) {
				widths[i] = max(widths[i], runeLen(r[i]))
			}
		}
	}
	return widths
}

// fit returns the widths of the shown columns within width, the wrapping
// columns narrowed as needed, or nil when they do not fit.
func (t *table) fit(show []bool, width int) []int {
	widths := t.natural()
	if width <= 0 {
		return widths
	}
	over := t.total(show, widths) - width
	for over > 0 {
		// Narrow the widest wrapping column by one.
		best := -1
		for i, c := range t.cols {
			if show[i] && c.wrap && widths[i] > max(c.min, runeLen(c.name), t.longestWord(i)) && (best < 0 || widths[i] > widths[best]) {
				best = i
			}
		}
		if best < 0 {
			return nil
		}
		widths[best]--
		over--
	}
	return widths
}

// longestWord is the longest word of a column's cells, which wrapping
// does not break unless it must.
func (t *table) longestWord(col int) int {
	n := 0
	for _, r := range t.rows {
		if col < len(r) {
			for _, w := range strings.Fields(r[col]) {
				n = max(n, runeLen(w))
			}
		}
	}
	return n
}

// squeeze narrows the shown columns, widest first, until they fit: the
// last resort of a table too wide for its width.
func (t *table) squeeze(show []bool, width int) []int {
	widths := t.natural()
	for t.total(show, widths) > width {
		best := -1
		for i := range t.cols {
			if show[i] && widths[i] > 1 && (best < 0 || widths[i] > widths[best]) {
				best = i
			}
		}
		if best < 0 {
			break
		}
		widths[best]--
	}
	return widths
}

func (t *table) total(show []bool, widths []int) int {
	n, cols := 0, 0
	for i := range t.cols {
		if show[i] {
			n += widths[i]
			cols++
		}
	}
	return n + 2*max(cols-1, 0)
}

func (t *table) lines(show []bool, widths []int) []string {
	var out []string
	row := func(cells []string) {
		parts := make([][]string, len(t.cols))
		height := 1
		for i, c := range t.cols {
			if !show[i] {
				continue
			}
			cell := ""
			if i < len(cells) {
				cell = cells[i]
			}
			if c.wrap && runeLen(cell) > widths[i] {
				parts[i] = wrap(cell, widths[i])
			} else {
				parts[i] = []string{cell}
			}
			for j, p := range parts[i] {
				parts[i][j] = truncate(p, widths[i])
			}
			height = max(height, len(parts[i]))
		}
		for l := range height {
			var b strings.Builder
			first := true
			for i, c := range t.cols {
				if !show[i] {
					continue
				}
				if !first {
					b.WriteString("  ")
				}
				first = false
				v := ""
				if l < len(parts[i]) {
					v = parts[i][l]
				}
				pad := strings.Repeat(" ", widths[i]-runeLen(v))
				if c.right {
					b.WriteString(pad + v)
				} else {
					b.WriteString(v + pad)
				}
			}
			out = append(out, strings.TrimRight(b.String(), " "))
		}
	}
	names := make([]string, len(t.cols))
	for i, c := range t.cols {
		names[i] = c.name
	}
	row(names)
	for _, r := range t.rows {
		row(r)
	}
	return out
}

// write writes the table to w within width, and after it a line naming
// the columns left out, if any; or, for a table of cards that does not
// fit, its cards.
func (t *table) write(w io.Writer, width int) {
	if t.cards && width > 0 && t.fit(allShown(len(t.cols)), width) == nil {
		t.writeCards(w, width)
		return
	}
	lines, left := t.render(width)
	for _, l := range lines {
		fmt.Fprintln(w, l)
	}
	if len(left) > 0 {
		para(w, width, "", fmt.Sprintf("(Left out for want of room: %s; a wider terminal shows them, and --json has everything.)", strings.ToLower(strings.Join(left, ", "))))
	}
}

func allShown(n int) []bool {
	show := make([]bool, n)
	for i := range show {
		show[i] = true
	}
	return show
}

// writeCards writes each row as a card: its first cell, and after it, as
// deep as the widest first cell, the other cells with their columns'
// names, wrapped within width.
func (t *table) writeCards(w io.Writer, width int) {
	lead := runeLen(t.cols[0].name)
	for _, r := range t.rows {
		lead = max(lead, runeLen(r[0]))
	}
	lead = min(lead+2, width/3)
	for _, r := range t.rows {
		var parts []string
		for i, c := range t.cols[1:] {
			if i+1 < len(r) && r[i+1] != "" {
				parts = append(parts, strings.ToLower(c.name)+" "+r[i+1])
			}
		}
		head := r[0]
		if runeLen(head) >= lead {
			fmt.Fprintln(w, head)
			head = ""
		}
		para(w, width, fmt.Sprintf("%-*s", lead, head), strings.Join(parts, "; "))
	}
}
