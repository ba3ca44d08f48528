/* Being written for issue 2; replaced by the real implementation in the next commits. */
