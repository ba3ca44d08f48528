/* Being written for issue 3. */
