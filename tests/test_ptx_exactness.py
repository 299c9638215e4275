"""tools/ptx_exactness.py, the PTX scan of sass_report.py and the compile tests: the contract's
inline-asm fma pass, anything contracted, approximate or flush-to-zero is reported."""
from ptx_exactness import inexact_ops, split_contract_fma

CONTRACT_FMA = """\t// begin inline asm
\t.loc\t1 108 13 // kernel.py:108:13
\tfma.rn.f32 %r315, %r283, %r316, %r284;

\t// end inline asm
"""


def test_contract_fma_blocks_are_counted_and_pass():
    ptx = "\tmul.rn.f32 %f1, %f2, %f3;\n" + CONTRACT_FMA + "\t// begin inline asm\n" \
          "\tfma.rn.f32 %f5, %f1, %f3, %f8;\n\t// end inline asm\n"
    assert split_contract_fma(ptx)[0] == 2
    assert inexact_ops(ptx) == []


def test_contracted_fma_outside_inline_asm_is_reported():
    ptx = CONTRACT_FMA + "\tfma.rn.f32 %f9, %f5, %f3, %f12;\n"
    assert inexact_ops(ptx) == ["fma.rn.f32 %f9, %f5, %f3, %f12;"]


def test_other_inline_asm_and_inexact_ops_are_reported():
    ptx = ("\t// begin inline asm\n\tfma.rn.f32 %f1, %f2, %f3, %f4;\n\tadd.f32 %f1, %f1, %f1;\n"
           "\t// end inline asm\n\tex2.approx.f32 %f6, %f7;\n\tadd.ftz.f32 %f1, %f2, %f3;\n"
           "\t// begin inline asm\n\tfma.rz.f32 %f1, %f2, %f3, %f4;\n\t// end inline asm\n")
    assert split_contract_fma(ptx)[0] == 0
    assert len(inexact_ops(ptx)) == 4


def test_comments_do_not_count():
    assert inexact_ops("\t// fma.rn.f32 in a comment, .approx too\n\tmov.b32 %r1, %r2;\n") == []
