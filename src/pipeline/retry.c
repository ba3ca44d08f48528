/* Being written for issue 4. */
