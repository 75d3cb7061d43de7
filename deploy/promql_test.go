package deploy

import (
	"fmt"
	"regexp"
	"strings"
	"unicode"
)

// promqlFunctions are PromQL's functions and aggregation operators
// (prometheus/promql/parser/functions.go and lex.go), so that a misspelt
// one is caught.
var promqlFunctions = setOf(`abs absent absent_over_time acos acosh asin asinh atan atanh avg avg_over_time
	bottomk ceil changes clamp clamp_max clamp_min cos cosh count count_over_time count_values day_of_month
	day_of_week day_of_year days_in_month deg delta deriv double_exponential_smoothing exp floor group
	histogram_avg histogram_count histogram_fraction histogram_quantile histogram_stddev histogram_stdvar
	histogram_sum holt_winters hour idelta increase irate label_join label_replace last_over_time limitk
	limit_ratio ln log10 log2 mad_over_time max max_over_time min min_over_time minute month pi
	predict_linear present_over_time quantile quantile_over_time rad rate resets round scalar sgn sin sinh
	sort sort_by_label sort_by_label_desc sort_desc sqrt stddev stddev_over_time stdvar stdvar_over_time
	sum sum_over_time tan tanh time timestamp topk vector year`)

// groupingWords take a list of label names in parentheses.
var groupingWords = setOf("by without on ignoring group_left group_right")

// promqlWords are the other keywords an expression may hold.
var promqlWords = setOf("and or unless bool offset inf nan atan2")

func setOf(s string) map[string]bool {
	m := map[string]bool{}
	for _, w := range strings.Fields(s) {
		m[w] = true
	}
	return m
}

var labelName = regexp.MustCompile(`^[a-zA-Z_][a-zA-Z0-9_]*$`)

// promqlRefs is what an expression refers to.
type promqlRefs struct {
	// Metrics are the series names it selects.
	Metrics []string
	// Labels are the label names of its matchers and its grouping
	// clauses.
	Labels []string
}

// readPromQL reads the series names and label names a PromQL expression
// refers to. It is no parser: it checks that brackets balance and that
// every function is PromQL's, and finds names by their place: a name
// followed by "(" is a function or a grouping clause, a keyword is
// skipped, any other is a series name; label matchers are read inside
// braces, and ranges, strings, numbers and durations are skipped. Grafana's
// variables ($__rate_interval, $netns) may stand in ranges and strings.
func readPromQL(expr string) (promqlRefs, error) {
	var refs promqlRefs
	rs := []rune(expr)
	depth := 0
	skipString := func(i int) (int, error) {
		q := rs[i]
		for i++; i < len(rs); i++ {
			switch rs[i] {
			case '\\':
				i++
			case q:
				return i + 1, nil
			}
		}
		return 0, fmt.Errorf("unterminated string in %q", expr)
	}
	ident := func(i int) (string, int) {
		j := i
		for j < len(rs) && (rs[j] == '_' || rs[j] == ':' || unicode.IsLetter(rs[j]) || unicode.IsDigit(rs[j])) {
			j++
		}
		return string(rs[i:j]), j
	}
	skipSpace := func(i int) int {
		for i < len(rs) && unicode.IsSpace(rs[i]) {
			i++
		}
		return i
	}
	for i := 0; i < len(rs); {
		c := rs[i]
		switch {
		case unicode.IsSpace(c):
			i++
		case c == '"' || c == '\'' || c == '`':
			var err error
			if i, err = skipString(i); err != nil {
				return refs, err
			}
		case c == '{':
			// Matchers: name op "value", separated by commas.
			for i++; ; {
				i = skipSpace(i)
				if i >= len(rs) {
					return refs, fmt.Errorf("unclosed { in %q", expr)
				}
				if rs[i] == '}' {
					i++
					break
				}
				if rs[i] == ',' {
					i++
					continue
				}
				name, j := ident(i)
				if name == "" {
					return refs, fmt.Errorf("a matcher without a label name at %q in %q", string(rs[i:]), expr)
				}
				refs.Labels = append(refs.Labels, name)
				i = skipSpace(j)
				for i < len(rs) && strings.ContainsRune("=!~", rs[i]) {
					i++
				}
				i = skipSpace(i)
				if i >= len(rs) || rs[i] != '"' && rs[i] != '\'' && rs[i] != '`' {
					return refs, fmt.Errorf("matcher %s without a quoted value in %q", name, expr)
				}
				var err error
				if i, err = skipString(i); err != nil {
					return refs, err
				}
			}
		case c == '[':
			j := strings.IndexRune(string(rs[i:]), ']')
			if j < 0 {
				return refs, fmt.Errorf("unclosed [ in %q", expr)
			}
			i += len([]rune(string(rs[i:])[:j])) + 1
		case c == '(':
			depth++
			i++
		case c == ')':
			if depth--; depth < 0 {
				return refs, fmt.Errorf("unbalanced ) in %q", expr)
			}
			i++
		case unicode.IsDigit(c) || c == '.':
			// A number or a duration.
			for i < len(rs) && (unicode.IsDigit(rs[i]) || unicode.IsLetter(rs[i]) || rs[i] == '.') {
				i++
			}
		case c == '_' || c == ':' || unicode.IsLetter(c):
			name, j := ident(i)
			k := skipSpace(j)
			followedByParen := k < len(rs) && rs[k] == '('
			next, _ := ident(k)
			switch {
			case promqlFunctions[name] && (next == "by" || next == "without"):
				// An aggregation with its grouping first: sum by (x) (…).
				i = j
			case groupingWords[name] && followedByParen:
				end := strings.IndexRune(string(rs[k:]), ')')
				if end < 0 {
					return refs, fmt.Errorf("unclosed %s ( in %q", name, expr)
				}
				for _, l := range strings.Split(string(rs[k+1:k+len([]rune(string(rs[k:])[:end]))]), ",") {
					if l = strings.TrimSpace(l); l != "" {
						if !labelName.MatchString(l) {
							return refs, fmt.Errorf("%q is not a label name, in %s (…) of %q", l, name, expr)
						}
						refs.Labels = append(refs.Labels, l)
					}
				}
				i = k + len([]rune(string(rs[k:])[:end])) + 1
			case followedByParen:
				if !promqlFunctions[name] {
					return refs, fmt.Errorf("%s is not a PromQL function, in %q", name, expr)
				}
				i = j
			case promqlWords[name] || groupingWords[name]:
				i = j
			default:
				refs.Metrics = append(refs.Metrics, name)
				i = j
			}
		case c == '$':
			// A Grafana variable outside a string.
			_, j := ident(i + 1)
			i = j
		default:
			i++
		}
	}
	if depth != 0 {
		return refs, fmt.Errorf("unbalanced ( in %q", expr)
	}
	if len(refs.Metrics) == 0 {
		return refs, fmt.Errorf("no series in %q", expr)
	}
	return refs, nil
}
