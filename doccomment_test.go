package iocp

import (
	"errors"
	"go/ast"
	"go/parser"
	"go/token"
	"io/fs"
	"path/filepath"
	"strings"
	"testing"
	"unicode/utf8"
)

// TestDocComments is a vet-style check of the package's own sources: it
// fails on a comment cut in half, as a move that takes a declaration and
// leaves the first lines of its doc behind would cut it.
//
// It looks at every comment group of the package's .go files (test files
// too, and internal/ if there is one) that is attached to nothing: not a
// doc comment or a line comment of a declaration, spec or field, not the
// package doc, not inside a function body (where comments annotate
// statements), and not made of directives (//go:build, //go:noinline)
// alone. Such a floating comment is a section heading or a note, and must
// end a sentence: its last line ends in one of . : ; ! ? ) ] } " ' or a
// backquote, unless it is a line of a code block (indented with a tab).
// One that ends mid-sentence is the first half of a doc comment whose
// declaration moved away, or whose second half did.
//
// A floating comment followed by another comment is checked too: a cut
// doc comment is often followed by the doc of the next declaration.
func TestDocComments(t *testing.T) {
	var files []string
	matches, err := filepath.Glob("*.go")
	if err != nil {
		t.Fatal(err)
	}
	files = append(files, matches...)
	err = filepath.WalkDir("internal", func(path string, d fs.DirEntry, err error) error {
		switch {
		case err != nil:
			return err
		case d.IsDir() && d.Name() == "testdata":
			return filepath.SkipDir
		case !d.IsDir() && strings.HasSuffix(path, ".go"):
			files = append(files, path)
		}
		return nil
	})
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		t.Fatal(err)
	}

	fset := token.NewFileSet()
	for _, name := range files {
		f, err := parser.ParseFile(fset, name, nil, parser.ParseComments|parser.SkipObjectResolution)
		if err != nil {
			t.Fatal(err)
		}
		for _, cg := range floatingComments(f) {
			text := strings.TrimRight(cg.Text(), "\n")
			if text == "" { // directives alone
				continue
			}
			last := text[strings.LastIndexByte(text, '\n')+1:]
			if strings.HasPrefix(last, "\t") { // a code block: a command, say
				continue
			}
			last = strings.TrimSpace(last)
			if r, _ := utf8.DecodeLastRuneInString(last); !strings.ContainsRune(".:;!?)]}\"'`", r) {
				t.Errorf("%s: comment attached to nothing ends mid-sentence (%q): the rest, or its declaration, is elsewhere",
					fset.Position(cg.End()), last)
			}
		}
	}
}

// floatingComments returns f's comment groups that are attached to no
// declaration, spec or field, are not f's package doc, and lie outside
// every function body.
func floatingComments(f *ast.File) []*ast.CommentGroup {
	attached := map[*ast.CommentGroup]bool{f.Doc: true}
	var bodies []*ast.BlockStmt
	ast.Inspect(f, func(n ast.Node) bool {
		switch n := n.(type) {
		case *ast.GenDecl:
			attached[n.Doc] = true
		case *ast.FuncDecl:
			attached[n.Doc] = true
			bodies = append(bodies, n.Body)
		case *ast.FuncLit:
			bodies = append(bodies, n.Body)
		case *ast.ImportSpec:
			attached[n.Doc], attached[n.Comment] = true, true
		case *ast.ValueSpec:
			attached[n.Doc], attached[n.Comment] = true, true
		case *ast.TypeSpec:
			attached[n.Doc], attached[n.Comment] = true, true
		case *ast.Field:
			attached[n.Doc], attached[n.Comment] = true, true
		}
		return true
	})
	var floating []*ast.CommentGroup
groups:
	for _, cg := range f.Comments {
		if attached[cg] {
			continue
		}
		for _, b := range bodies {
			if b != nil && b.Pos() <= cg.Pos() && cg.End() <= b.End() {
				continue groups
			}
		}
		floating = append(floating, cg)
	}
	return floating
}
